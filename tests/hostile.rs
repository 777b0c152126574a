//! Hostile review repros (separate binary: own thread indices, own spares).

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use smallmid::SmallMidArena;
use std::sync::{Arc, Barrier, Mutex};

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Sizes hitting many distinct classes (one slab each).
const SIZES: [usize; 14] = [
    8, 24, 48, 96, 200, 320, 700, 1024, 1500, 3000, 5000, 9000, 17000, 30000,
];

/// A spare recycled by thread T keeps T's cache attached with one whole
/// slab per class T used. When another thread U takes that spare through
/// `builder().memory_limit(1 MiB)`, those slabs are pinned in T's (idle)
/// cache: U cannot get them back (it flushes only its own cache), so a
/// "fresh" limited arena refuses what a brand-new one serves.
#[test]
fn spare_from_other_thread_pins_slabs_against_limit() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    smallmid::trim_warm_cache();
    let (to_t, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_t) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let a = SmallMidArena::builder().memory_limit(1 << 20).build();
        for &s in &SIZES {
            let p = a.allocate(layout(s)).unwrap();
            // SAFETY: a live block of this arena, allocated with this layout, freed once.
            unsafe { a.deallocate(p.cast(), layout(s)) };
        }
        let b = SmallMidArena::new();
        b.reserve(1).unwrap(); // grown: past its seed (a seed's drop recycles nothing)
        drop(a); // a -> T's spare, reset, T's cache keeps 14 slabs
        drop(b); // b -> T's spare, a -> shared spares
        to_main.send(()).unwrap();
        from_main.recv().unwrap(); // stay alive (idle) meanwhile
    });
    from_t.recv().unwrap();
    let u = SmallMidArena::builder().memory_limit(1 << 20).build();
    let st = u.stats();
    let big = layout(900 << 10);
    let r = u.allocate(big);
    let ok = r.is_ok();
    if let Ok(p) = r {
        // SAFETY: a live block of this arena, allocated with this layout, freed once.
        unsafe { u.deallocate(p.cast(), big) };
    }
    to_t.send(()).unwrap();
    t.join().unwrap();
    assert!(
        ok,
        "fresh 1 MiB arena refused 900 KiB: slabs pinned by another thread's cache; stats of fresh arena: {st}"
    );
}

fn balanced(a: &SmallMidArena, live: u64) {
    let s = a.stats();
    assert_eq!(s.blocks_in_use, live, "{s}");
    for c in &s.classes {
        assert!(c.allocs >= c.frees, "{s}");
    }
}

/// Threads finish with an arena and exit at once, while the owner resets
/// and drops it (and other arenas) at the same moment.
#[test]
fn exit_races_reset_and_drop() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for round in 0..300u64 {
        let mut main = SmallMidArena::new();
        let n = 4;
        let extra: Vec<Arc<SmallMidArena>> =
            (0..3).map(|_| Arc::new(SmallMidArena::new())).collect();
        let done = Arc::new(Barrier::new(n + 1));
        let kept: Arc<Mutex<Vec<(usize, usize)>>> = Arc::new(Mutex::new(Vec::new()));
        // SAFETY: the arena outlives the spawned thread, which is joined before the arena is dropped.
        let mref: &'static SmallMidArena = unsafe { &*(&main as *const SmallMidArena) };
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (done, kept, extra) = (done.clone(), kept.clone(), extra.clone());
                std::thread::spawn(move || {
                    for (k, e) in extra.iter().enumerate() {
                        let s = SIZES[(i + k) % SIZES.len()];
                        let p = e.allocate(layout(s)).unwrap();
                        // SAFETY: a live block of this arena, allocated with this layout, freed once.
                        unsafe { e.deallocate(p.cast(), layout(s)) };
                    }
                    let mut mine = Vec::new();
                    for j in 0..50 {
                        let s = SIZES[(i * 7 + j) % 10];
                        mine.push((
                            mref.allocate(layout(s)).unwrap().cast::<u8>().as_ptr() as usize,
                            s,
                        ));
                    }
                    // free half here (into this thread's cache)
                    for (p, s) in mine.drain(..25) {
                        // SAFETY: a live block of this arena, allocated with this layout, freed once.
                        unsafe {
                            mref.deallocate(
                                core::ptr::NonNull::new(p as *mut u8).unwrap(),
                                layout(s),
                            )
                        };
                    }
                    kept.lock().unwrap().extend(mine);
                    drop(extra);
                    done.wait();
                    // exit now
                })
            })
            .collect();
        done.wait();
        // free the rest on this thread
        let live: Vec<_> = std::mem::take(&mut *kept.lock().unwrap());
        for (p, s) in &live[..live.len() / 2] {
            // SAFETY: a live block of this arena, allocated with this layout, freed once.
            unsafe { main.deallocate(core::ptr::NonNull::new(*p as *mut u8).unwrap(), layout(*s)) };
        }
        let left = (live.len() - live.len() / 2) as u64;
        balanced(&main, left);
        let _ = main.audit();
        if round % 2 == 0 {
            main.reset();
            balanced(&main, 0);
            let _ = main.audit();
        }
        drop(extra);
        for h in hs {
            h.join().unwrap();
        }
        if round % 2 == 1 {
            balanced(&main, left);
            main.reset();
        }
        balanced(&main, 0);
        main.flush_thread_cache();
        assert_eq!(main.audit().blocks_out, 0);
        assert_eq!(main.stats().thread_caches, 1);
        drop(main);
    }
}

/// Freeing a span leaves its (now empty) SuperSlab as the pool's spare,
/// still counted as held: a huge block that fits the limit next to the
/// live data is refused.
#[test]
fn freed_span_superslab_blocks_huge_under_limit() {
    let a = SmallMidArena::builder().memory_limit(3 << 20).build();
    let span = layout(900 << 10);
    let p1 = a.allocate(span).unwrap(); // home SuperSlab
    let p2 = a.allocate(span).unwrap(); // a second SuperSlab
                                        // SAFETY: a live block of this arena, allocated with this layout, freed once.
    unsafe { a.deallocate(p2.cast(), span) };
    let live_held = 1 << 20; // only p1 is live: one SuperSlab
    let huge = layout((3 << 20) - live_held - (64 << 10));
    let s = a.stats();
    let r = a.allocate(huge);
    let ok = r.is_ok();
    if let Ok(h) = r {
        // SAFETY: a live block of this arena, allocated with this layout, freed once.
        unsafe { a.deallocate(h.cast(), huge) };
    }
    // SAFETY: a live block of this arena, allocated with this layout, freed once.
    unsafe { a.deallocate(p1.cast(), span) };
    assert!(
        ok,
        "huge of {} refused; 1 live span; before: {s}",
        huge.size()
    );
}

/// Same with small blocks: a SuperSlab emptied by frees stays held.
#[test]
fn freed_small_blocks_superslab_blocks_huge_under_limit() {
    let a = SmallMidArena::builder().memory_limit(3 << 20).build();
    let l = layout(30000);
    let ps: Vec<_> = (0..60).map(|_| a.allocate(l).unwrap()).collect(); // > 1 SuperSlab
    for p in &ps {
        // SAFETY: a live block of this arena, allocated with this layout, freed once.
        unsafe { a.deallocate(p.cast(), l) };
    }
    let s = a.stats();
    let huge = layout((2 << 20) - (64 << 10));
    let r = a.allocate(huge);
    let ok = r.is_ok();
    if let Ok(h) = r {
        // SAFETY: a live block of this arena, allocated with this layout, freed once.
        unsafe { a.deallocate(h.cast(), huge) };
    }
    assert!(
        ok,
        "huge of {} refused with nothing live; before: {s}",
        huge.size()
    );
}

/// Producer threads recycle arenas into the shared spares (their caches
/// still attached) and exit at once; a consumer takes those spares and
/// works in them while the producers' exits flush into them.
#[test]
fn spares_taken_while_their_threads_exit() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 200 {
                let mut a = SmallMidArena::new();
                let mut v = Vec::new();
                for j in 0..64 {
                    let s = SIZES[j % SIZES.len()];
                    v.push((a.allocate(layout(s)).unwrap(), s));
                }
                let s = a.stats();
                assert_eq!(s.blocks_in_use, 64, "{s}");
                let _ = a.audit();
                for (p, s) in v {
                    // SAFETY: a live block of this arena, allocated with this layout, freed once.
                    unsafe { a.deallocate(p.cast(), layout(s)) };
                }
                assert_eq!(a.stats().blocks_in_use, 0, "{}", a.stats());
                if n % 3 == 0 {
                    a.reset();
                    assert_eq!(a.stats().blocks_in_use, 0);
                }
                n += 1;
            }
        })
    };
    for _ in 0..300 {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    let arenas: Vec<_> = (0..3).map(|_| SmallMidArena::new()).collect();
                    for a in &arenas {
                        for &s in &SIZES {
                            let p = a.allocate(layout(s)).unwrap();
                            // SAFETY: a live block of this arena, allocated with this layout, freed once.
                            unsafe { a.deallocate(p.cast(), layout(s)) };
                        }
                    }
                    drop(arenas); // into this thread's spare and the shared spares
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    consumer.join().unwrap();
}

/// Small shapes for miri: exits racing drops, audits racing refills and
/// exit flushes, spares crossing threads.
#[test]
fn miri_small_races() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..2 {
        let a = Arc::new(SmallMidArena::new());
        let b = Arc::new(SmallMidArena::new());
        let hs: Vec<_> = (0..2)
            .map(|i| {
                let (a, b) = (a.clone(), b.clone());
                std::thread::spawn(move || {
                    let s = [24, 3000][i];
                    let p = a.allocate(layout(s)).unwrap();
                    let q = b.allocate(layout(s + 8)).unwrap();
                    let _ = a.audit();
                    // SAFETY: a live block of this arena, allocated with this layout, freed once.
                    unsafe { a.deallocate(p.cast(), layout(s)) };
                    drop(a);
                    q.cast::<u8>().as_ptr() as usize
                    // b's handle dropped at exit; maybe the last
                })
            })
            .collect();
        let _ = b.audit();
        let _ = a.stats();
        drop(a); // maybe the last handle, racing exits
        let ps: Vec<usize> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let b = Arc::into_inner(b).unwrap();
        assert_eq!(b.stats().blocks_in_use, 2);
        for (i, p) in ps.into_iter().enumerate() {
            let s = [24, 3000][i] + 8;
            // SAFETY: a live block of this arena, allocated with this layout, freed once.
            unsafe { b.deallocate(core::ptr::NonNull::new(p as *mut u8).unwrap(), layout(s)) };
        }
        assert_eq!(b.stats().blocks_in_use, 0);
        // b recycled on a thread that exits right away; this thread takes spares
        let t = std::thread::spawn(move || drop(b));
        let c = SmallMidArena::new();
        let _ = c.allocate(layout(200)).unwrap();
        t.join().unwrap();
        drop(c);
        let d = SmallMidArena::new();
        let _ = d.allocate(layout(32)).unwrap();
        let _ = d.audit();
    }
}

/// `reset()` keeps one whole slab per class in the resetting thread's
/// cache. In a limited arena handed to a worker after the reset, the
/// worker cannot get those slabs back: with nothing live, a large block
/// that a fresh arena serves is refused.
#[test]
fn reset_pins_slabs_against_other_threads_under_limit() {
    let mut a = SmallMidArena::builder().memory_limit(1 << 20).build();
    for &s in &SIZES {
        let p = a.allocate(layout(s)).unwrap();
        // SAFETY: a live block of this arena, allocated with this layout, freed once.
        unsafe { a.deallocate(p.cast(), layout(s)) };
    }
    a.reset();
    assert_eq!(a.stats().blocks_in_use, 0);
    let ok = std::thread::scope(|sc| {
        sc.spawn(|| {
            let big = layout(900 << 10);
            let r = a.allocate(big);
            if let Ok(p) = r {
                // SAFETY: a live block of this arena, allocated with this layout, freed once.
                unsafe { a.deallocate(p.cast(), big) };
            }
            r.is_ok()
        })
        .join()
        .unwrap()
    });
    assert!(
        ok,
        "empty 1 MiB arena refused 900 KiB on a worker after reset()"
    );
}
