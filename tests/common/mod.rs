//! Helpers shared by the hostile-review test files: sizes, layouts, a
//! deterministic PRNG and a lock for tests that read process-wide state.
#![allow(dead_code)]

use core::alloc::Layout;
use std::sync::{Mutex, MutexGuard};

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;
/// One slab.
pub const SLAB: usize = 64 * KIB;

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests reading process-wide state (huge cache, spares, warm cache,
/// thread counts) run one at a time; a failed one does not poison the rest.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// A tiny deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Waits until threads that exited have run their exit (scoped joins
/// return before thread-local destructors finish).
pub fn settle(threads: usize) {
    for _ in 0..2000 {
        if smallmid::global_stats().threads <= threads {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // And stable for a while (the base count may have included threads
    // of an earlier test still exiting).
    let mut last = smallmid::global_stats().threads;
    let mut same = 0;
    while same < 30 {
        std::thread::sleep(std::time::Duration::from_millis(1));
        let now = smallmid::global_stats().threads;
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
}

/// Live blocks, to catch any two overlapping.
#[derive(Default)]
pub struct Live(pub std::collections::BTreeMap<usize, usize>);
impl Live {
    #[track_caller]
    pub fn add(&mut self, p: *mut u8, n: usize, what: &str) {
        let a = p as usize;
        if let Some((&s, &len)) = self.0.range(..=a).next_back() {
            assert!(
                s + len <= a,
                "{what}: {a:#x}+{n} overlaps live {s:#x}+{len}"
            );
        }
        if let Some((&s, &len)) = self.0.range(a..).next() {
            assert!(a + n <= s, "{what}: {a:#x}+{n} overlaps live {s:#x}+{len}");
        }
        self.0.insert(a, n);
    }
    pub fn remove(&mut self, p: *mut u8) {
        assert!(
            self.0.remove(&(p as usize)).is_some(),
            "freeing a block not live"
        );
    }
}

/// A block of `lay` from `a`, or a panic.
pub fn alloc(a: &smallmid::SmallMidArena, lay: Layout) -> *mut u8 {
    allocator_api2::alloc::Allocator::allocate(a, lay)
        .expect("allocation refused")
        .cast::<u8>()
        .as_ptr()
}

/// Frees `p` (a live block of `a` allocated with `lay`).
pub fn free(a: &smallmid::SmallMidArena, p: *mut u8, lay: Layout) {
    // SAFETY: `p` is a live block of `a` allocated with `lay` (callers).
    unsafe {
        allocator_api2::alloc::Allocator::deallocate(a, core::ptr::NonNull::new(p).unwrap(), lay)
    }
}

/// Fills the first `n` bytes of a live block the test owns with `v`.
pub fn stamp(p: *mut u8, n: usize, v: u8) {
    // SAFETY: inside a live block of at least `n` bytes the test owns.
    unsafe { core::ptr::write_bytes(p, v, n) }
}

/// Checks that the first `n` bytes of a live block the test owns are `v`.
#[track_caller]
pub fn check(p: *const u8, n: usize, v: u8, what: &str) {
    // SAFETY: inside a live block of at least `n` bytes the test owns.
    let s = unsafe { core::slice::from_raw_parts(p, n) };
    if let Some(i) = s.iter().position(|&b| b != v) {
        panic!("{what}: byte {i} of {n} at {p:p} is {} not {v}", s[i]);
    }
}

/// Waits until at most `n` caches are attached to `a` (exits under way).
pub fn wait_caches(a: &smallmid::SmallMidArena, n: u64) {
    for _ in 0..5000 {
        if a.stats().thread_caches <= n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("caches still attached: {}", a.stats());
}

/// A fresh arena still in its seed: made on a fresh thread, which has no
/// spare of its own, once the shared spares (arenas other tests dropped)
/// are all taken.
pub fn seeded() -> smallmid::SmallMidArena {
    seeded_with(smallmid::SmallMidArena::builder())
}

/// As [`seeded`], with `b`'s settings.
pub fn seeded_with(b: smallmid::Builder) -> smallmid::SmallMidArena {
    let (a, spares) = std::thread::spawn(move || {
        let mut spares = Vec::new();
        loop {
            let a = b.clone().build();
            if a.stats().superslabs == 0 {
                return (a, spares);
            }
            // Shared spares are bounded (8 shards of 16).
            assert!(spares.len() < 1000, "never in a seed: {a:?}");
            spares.push(a);
        }
    })
    .join()
    .unwrap();
    drop(spares);
    a
}

/// The state address printed by `Debug`: which arena a handle is.
pub fn state_of(a: &smallmid::SmallMidArena) -> String {
    let d = format!("{a:?}");
    let from = d.find("state: ").expect("state field") + 7;
    let to = from + d[from..].find(',').expect("end of state");
    d[from..to].to_string()
}

/// A fresh-looking arena's counts: nothing counted, nothing attached,
/// nothing out.
#[track_caller]
pub fn assert_fresh_counts(a: &smallmid::SmallMidArena, what: &str) {
    let s = a.stats();
    assert_eq!(s.blocks_in_use, 0, "{what}\n{s}");
    assert_eq!(s.bytes_in_use, 0, "{what}\n{s}");
    assert_eq!(s.thread_caches, 0, "{what}\n{s}");
    assert_eq!((s.large_allocs, s.large_frees), (0, 0), "{what}\n{s}");
    assert!(s.classes.is_empty(), "{what}: counters survived\n{s}");
    assert_eq!(s.huge_bytes, 0, "{what}\n{s}");
}

/// The text a panic carried (empty if it was not a string).
pub fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Process-wide stats once exited threads have settled (down to `threads`)
/// and the warm cache, the spares and the seeds' SuperSlabs are trimmed.
pub fn trimmed_stats(threads: usize) -> smallmid::GlobalStats {
    settle(threads);
    smallmid::trim_warm_cache();
    smallmid::global_stats()
}

/// Per-class (allocs, frees) of the class of block size `size`, or zeros.
pub fn class_counts(a: &smallmid::SmallMidArena, size: u64) -> (u64, u64) {
    a.stats()
        .classes
        .iter()
        .find(|c| c.size == size)
        .map_or((0, 0), |c| (c.allocs, c.frees))
}
