//! Side-by-side benchmark: smallmid against std's System allocator (glibc),
//! mimalloc (process-wide and as a first-class heap), bumpalo and
//! blink-alloc, on the same workloads, interleaved, several repetitions.
//!
//! ```sh
//! cargo run --release --example compare            # 5 repetitions
//! cargo run --release --example compare -- --reps 3 --scale 0.2
//! cargo run --release --example compare -- --only shared --threads 32   # a bigger machine
//! cargo run --release --example compare -- --only many-arenas --build-cap 60
//! ```
//!
//! `--only W` runs one workload; `--build-cap S` (default 10) is how long the
//! live-arena workloads (`many-arenas`, `tiny-arenas`) may spend making
//! arenas in one round before they stop short (so may half the machine's
//! memory): a run that stops says so under the table, and its numbers are
//! for the arenas it made.
//!
//! Each (workload, allocator, repetition) runs in a fresh child process, so
//! peak RSS and page faults belong to that run alone. Printed: median ns per
//! op, M ops/s, the ratio to the workload's reference peer, median peak RSS,
//! minor page faults per million ops after a warm-up round, minor faults of
//! the whole child process (start to exit: first touch included), and for
//! the live-arena workloads the process's mappings (lines of
//! `/proc/self/maps`) with all arenas alive; then
//! writes a chart of the table (ns/op relative to the reference peer, and
//! peak RSS, per workload and allocator) to `target/compare.svg`.

use allocator_api2::alloc::{AllocError, Allocator, Global};
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use core::ptr::NonNull;
use std::process::Command;
use std::time::Instant;

// ---------------------------------------------------------------- peers

#[path = "common/mimalloc.rs"]
mod mimalloc;
use mimalloc::{MiGlobal, MiHeap};

/// One allocator under test: how to make an arena, get its `Allocator`, and
/// release it.
trait Peer: Sized {
    /// Individual frees make memory reusable (bump allocators: no).
    const FREES: bool;
    /// Dropping the arena releases its blocks (no per-block free needed).
    const BULK: bool;
    /// May be shared by threads (one allocating, another freeing).
    const SYNC: bool;
    /// Any thread may allocate from it (a mimalloc heap: only its own).
    const ANY_THREAD: bool = true;
    /// Reused via `reset()` between requests and rounds, as its users do
    /// (bump allocators), instead of a new arena each time.
    const RESETS: bool = false;
    type A<'a>: Allocator
    where
        Self: 'a;
    fn new() -> Self;
    fn alloc(&self) -> Self::A<'_>;
    /// Frees everything at once, keeping the memory (`RESETS` peers).
    fn reset(&mut self) {}
}

struct System;
impl Peer for System {
    const FREES: bool = true;
    const BULK: bool = false;
    const SYNC: bool = true;
    type A<'a> = Global;
    fn new() -> Self {
        System
    }
    fn alloc(&self) -> Global {
        Global
    }
}

impl Peer for MiGlobal {
    const FREES: bool = true;
    const BULK: bool = false;
    const SYNC: bool = true;
    type A<'a> = MiGlobal;
    fn new() -> Self {
        MiGlobal
    }
    fn alloc(&self) -> MiGlobal {
        MiGlobal
    }
}

impl Peer for MiHeap {
    const FREES: bool = true;
    const BULK: bool = true;
    const SYNC: bool = true;
    const ANY_THREAD: bool = false;
    type A<'a> = &'a MiHeap;
    fn new() -> Self {
        MiHeap::new()
    }
    fn alloc(&self) -> &MiHeap {
        self
    }
}

impl Peer for bumpalo::Bump {
    const FREES: bool = false;
    const BULK: bool = true;
    const SYNC: bool = false;
    const RESETS: bool = true;
    type A<'a> = &'a bumpalo::Bump;
    fn new() -> Self {
        bumpalo::Bump::new()
    }
    fn alloc(&self) -> &bumpalo::Bump {
        self
    }
    fn reset(&mut self) {
        bumpalo::Bump::reset(self);
    }
}

/// blink-alloc 0.4 implements allocator-api2 0.4's trait; this forwards
/// the 0.2 trait (the one hashbrown and bumpalo use) to it.
struct Blink(blink_alloc::SyncBlinkAlloc);
// SAFETY: forwards to blink-alloc's own `Allocator` implementation.
unsafe impl Allocator for &Blink {
    fn allocate(&self, l: Layout) -> Result<NonNull<[u8]>, AllocError> {
        allocator_api2_04::alloc::Allocator::allocate(&self.0, l).map_err(|_| AllocError)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { allocator_api2_04::alloc::Allocator::deallocate(&self.0, p, l) }
    }
    unsafe fn grow(
        &self,
        p: NonNull<u8>,
        o: Layout,
        n: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract.
        unsafe {
            allocator_api2_04::alloc::Allocator::grow(&self.0, p, o, n).map_err(|_| AllocError)
        }
    }
}
impl Peer for Blink {
    const FREES: bool = false;
    const BULK: bool = true;
    const SYNC: bool = true;
    type A<'a> = &'a Blink;
    fn new() -> Self {
        Blink(blink_alloc::SyncBlinkAlloc::new())
    }
    fn alloc(&self) -> &Blink {
        self
    }
}

impl Peer for smallmid::SmallMidArena {
    const FREES: bool = true;
    const BULK: bool = true;
    const SYNC: bool = true;
    type A<'a> = &'a smallmid::SmallMidArena;
    fn new() -> Self {
        smallmid::SmallMidArena::new()
    }
    fn alloc(&self) -> &smallmid::SmallMidArena {
        self
    }
}

/// smallmid as bumpalo's users run bumpalo: one arena per worker,
/// `reset()` between requests and rounds.
struct SmallReset(smallmid::SmallMidArena);
impl Peer for SmallReset {
    const FREES: bool = true;
    const BULK: bool = true;
    const SYNC: bool = true;
    const RESETS: bool = true;
    type A<'a> = &'a smallmid::SmallMidArena;
    fn new() -> Self {
        SmallReset(smallmid::SmallMidArena::new())
    }
    fn alloc(&self) -> &smallmid::SmallMidArena {
        &self.0
    }
    fn reset(&mut self) {
        self.0.reset();
    }
}

// ---------------------------------------------------------------- workloads

/// Precomputed pseudo-random sizes, identical for every peer.
struct Sizes {
    v: Vec<u32>,
    i: usize,
}
impl Sizes {
    fn new(lo: usize, hi: usize, seed: u64) -> Self {
        let mut x = seed | 1;
        let v = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (lo + (x % (hi - lo + 1) as u64) as usize) as u32
            })
            .collect();
        Sizes { v, i: 0 }
    }
    #[inline(always)]
    fn next(&mut self) -> Layout {
        self.i = (self.i + 1) & 65535;
        // SAFETY: sizes are small, alignment 8 is a power of two.
        unsafe { Layout::from_size_align_unchecked(self.v[self.i] as usize, 8) }
    }
}

#[inline(always)]
fn alloc_touch<A: Allocator>(a: &A, l: Layout) -> NonNull<u8> {
    let p = a.allocate(l).expect("allocation failed").cast::<u8>();
    // SAFETY: fresh block of at least 8 bytes: write as a user would.
    unsafe { p.as_ptr().cast::<u64>().write_unaligned(l.size() as u64) };
    p
}

/// Faults so far (minor) and peak RSS in KiB.
fn rusage() -> (u64, u64) {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        (u.ru_minflt as u64, u.ru_maxrss as u64)
    }
}

struct Run {
    ns: f64,
    ops: u64,
    faults: u64,
    /// Lines of `/proc/self/maps` at the workload's peak, where it counts
    /// them (the live-arena workloads).
    maps: Option<u64>,
    /// Why and where the run stopped short of its full size, if it did.
    stopped: Option<String>,
}

fn timed(ops: u64, f: impl FnOnce()) -> Run {
    let (f0, _) = rusage();
    let t = Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64;
    let (f1, _) = rusage();
    Run {
        ns,
        ops,
        faults: f1 - f0,
        maps: None,
        stopped: None,
    }
}

/// Ring of 4096 slots; each op frees the slot's block and allocates a random
/// size in 256..=1024 (the seed's own benchmark).
fn churn<P: Peer>(scale: f64) -> Option<Run> {
    churn_sized::<P>(scale, 256, 1024, 4096)
}

/// `churn` of other size mixes: `churn-small`, 8..=64 B (boxed scalars,
/// short strings, list nodes) in a ring of 4096; `churn-large`, 32..=256
/// KiB (buffers, spans of slabs here) in a ring of 64, a quarter of the
/// ops.
fn churn_sized<P: Peer>(scale: f64, lo: usize, hi: usize, ring_len: usize) -> Option<Run> {
    assert!(ring_len.is_power_of_two());
    if !P::FREES {
        return None;
    }
    let arena = P::new();
    let a = arena.alloc();
    let mut sizes = Sizes::new(lo, hi, 1);
    let mut ring: Vec<(NonNull<u8>, Layout)> = (0..ring_len)
        .map(|_| {
            let l = sizes.next();
            (alloc_touch(&a, l), l)
        })
        .collect();
    let mut step = |n: usize, ring: &mut Vec<(NonNull<u8>, Layout)>| {
        for i in 0..n {
            let slot = &mut ring[i & (ring_len - 1)]; // no division in the loop
                                                      // SAFETY: allocated from `a` with this layout.
            unsafe { a.deallocate(slot.0, slot.1) };
            let l = sizes.next();
            *slot = (alloc_touch(&a, l), l);
        }
    };
    let per_op = hi.div_ceil(64 << 10); // large blocks: fewer ops
    step((1 << 20) / per_op, &mut ring); // warm-up
    let ops = (10_000_000.0 * scale) as usize / per_op;
    let run = timed(ops as u64, || step(ops, &mut ring));
    for (p, l) in ring {
        // SAFETY: as above.
        unsafe { a.deallocate(p, l) };
    }
    Some(run)
}

/// A long-lived arena whose frees come back in bulk while a few blocks
/// live on: rounds of 10,000 blocks of 16..=128 B (a parse, a request
/// handled inside one arena kept for the process); after each round 2% of
/// its blocks survive into a pool of at most 40,000 (oldest freed first)
/// and the rest are freed in the order they were made. One op = one
/// allocation and its free.
fn survivors<P: Peer>(scale: f64) -> Option<Run> {
    if !P::FREES {
        return None;
    }
    const ROUND: usize = 10_000;
    const KEEP: usize = 40_000;
    let arena = P::new();
    let a = arena.alloc();
    let mut sizes = Sizes::new(16, 128, 7);
    let mut kept: std::collections::VecDeque<(NonNull<u8>, Layout)> =
        std::collections::VecDeque::with_capacity(KEEP + ROUND);
    let mut round_blocks: Vec<(NonNull<u8>, Layout)> = Vec::with_capacity(ROUND);
    let mut rounds = |n: usize| {
        for _ in 0..n {
            for _ in 0..ROUND {
                let l = sizes.next();
                round_blocks.push((alloc_touch(&a, l), l));
            }
            for (i, b) in round_blocks.drain(..).enumerate() {
                if i % 50 == 0 {
                    kept.push_back(b);
                } else {
                    // SAFETY: allocated from `a` with this layout.
                    unsafe { a.deallocate(b.0, b.1) };
                }
            }
            while kept.len() > KEEP {
                let (p, l) = kept.pop_front().unwrap();
                // SAFETY: as above.
                unsafe { a.deallocate(p, l) };
            }
        }
    };
    rounds(20); // warm-up
    let n = ((400.0 * scale) as usize).max(1);
    let run = timed((n * ROUND) as u64, || rounds(n));
    for (p, l) in kept {
        // SAFETY: as above.
        unsafe { a.deallocate(p, l) };
    }
    Some(run)
}

/// 200,000 random 256..=1024 B blocks, then drop the arena (bulk release
/// where the peer can; bumpalo: `reset()` one `Bump`); 20 rounds after one
/// warm-up round.
fn fill_drop<P: Peer>(scale: f64) -> Option<Run> {
    let n = (200_000.0 * scale) as usize;
    let mut sizes = Sizes::new(256, 1024, 2);
    let mut blocks = Vec::with_capacity(n);
    let mut kept = P::RESETS.then(P::new);
    let mut round = |blocks: &mut Vec<(NonNull<u8>, Layout)>| {
        let fresh = kept.is_none().then(P::new);
        let arena = fresh.as_ref().or(kept.as_ref()).unwrap();
        let a = arena.alloc();
        for _ in 0..n {
            let l = sizes.next();
            blocks.push((alloc_touch(&a, l), l));
        }
        if !P::BULK {
            for &(p, l) in blocks.iter() {
                // SAFETY: allocated from `a` with this layout.
                unsafe { a.deallocate(p, l) };
            }
        }
        blocks.clear();
        drop(a);
        drop(fresh);
        if let Some(k) = kept.as_mut() {
            k.reset();
        }
    };
    round(&mut blocks);
    Some(timed(20 * n as u64, || {
        (0..20).for_each(|_| round(&mut blocks))
    }))
}

/// New arena (bumpalo: one `Bump`, `reset()` after each request), 32 random
/// 16..=1024 B blocks and a Vec<u64> grown to 100, drop. One op = one
/// request.
fn per_request<P: Peer>(scale: f64) -> Option<Run> {
    let rounds = (200_000.0 * scale) as usize;
    let mut sizes = Sizes::new(16, 1024, 3);
    let mut kept = P::RESETS.then(P::new);
    let mut one = || {
        let fresh = kept.is_none().then(P::new);
        let arena = fresh.as_ref().or(kept.as_ref()).unwrap();
        let a = arena.alloc();
        let mut blocks = [(NonNull::<u8>::dangling(), Layout::new::<u8>()); 32];
        for b in blocks.iter_mut() {
            let l = sizes.next();
            *b = (alloc_touch(&a, l), l);
        }
        let mut v = AVec::new_in(&a);
        for i in 0..100u64 {
            v.push(i);
        }
        core::hint::black_box(&v);
        drop(v);
        if !P::BULK {
            for (p, l) in blocks {
                // SAFETY: allocated from `a` with this layout.
                unsafe { a.deallocate(p, l) };
            }
        }
        drop(a);
        drop(fresh);
        if let Some(k) = kept.as_mut() {
            k.reset();
        }
    };
    for _ in 0..1000 {
        one();
    }
    Some(timed(rounds as u64, || (0..rounds).for_each(|_| one())))
}

/// Send wrapper for a batch of blocks.
struct Batch(Vec<(NonNull<u8>, Layout)>);
// SAFETY: the blocks are plain memory owned by whoever holds the batch.
unsafe impl Send for Batch {}

/// One thread allocates random 256..=1024 B blocks, another frees them
/// (batches of 64 over a channel). One op = one block.
fn xthread<P: Peer>(scale: f64) -> Option<Run> {
    if !(P::SYNC && P::FREES) {
        return None;
    }
    struct Shared<P>(P);
    // SAFETY: `SYNC` peers may be shared: one thread allocates, another frees.
    unsafe impl<P> Sync for Shared<P> {}
    let arena = Shared(P::new());
    let run = |n: usize, sizes: &mut Sizes| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(256);
        std::thread::scope(|s| {
            let arena = &arena;
            s.spawn(move || {
                let a = arena.0.alloc();
                for b in rx {
                    for (p, l) in b.0 {
                        // SAFETY: allocated from this arena with `l`.
                        unsafe { a.deallocate(p, l) };
                    }
                }
            });
            let a = arena.0.alloc();
            for _ in 0..n / 64 {
                let v = (0..64)
                    .map(|_| {
                        let l = sizes.next();
                        (alloc_touch(&a, l), l)
                    })
                    .collect();
                tx.send(Batch(v)).unwrap();
            }
            drop(tx);
        });
    };
    let mut sizes = Sizes::new(256, 1024, 4);
    run(1_000_000, &mut sizes);
    let n = (5_000_000.0 * scale) as usize;
    Some(timed(n as u64, || run(n, &mut sizes)))
}

/// Blocks handed between threads.
struct Sent<T>(T);
// SAFETY: the blocks (and the arena, for `Send` peers) are owned by
// whoever holds the value; the receiving side is their only user.
unsafe impl<T> Send for Sent<T> {}
impl<T> Sent<T> {
    /// Unwraps inside a closure (capturing the whole `Send` wrapper).
    fn into_inner(self) -> T {
        self.0
    }
}

/// Requests that hop threads (a work-stealing runtime's tasks): a request's
/// arena is made on one thread with 16 blocks of 16..=1024 B, handed over a
/// channel (up to 512 in flight) to a second thread that adds 16 blocks and
/// a `Vec<u64>` grown to 100, then drops it. One op = one request. Peers
/// that reset (bumpalo) make a new arena per request: a `Bump` moved to
/// another thread cannot be reset by its first one.
fn hop<P: Peer>(scale: f64) -> Option<Run> {
    if !P::ANY_THREAD {
        return None; // a mimalloc heap allocates only on its own thread
    }
    let run = |n: usize| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Sent<(P, [(NonNull<u8>, Layout); 16])>>(512);
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut sizes = Sizes::new(16, 1024, 6);
                for Sent((arena, first)) in rx {
                    let a = arena.alloc();
                    let more: [(NonNull<u8>, Layout); 16] = core::array::from_fn(|_| {
                        let l = sizes.next();
                        (alloc_touch(&a, l), l)
                    });
                    let mut v = AVec::new_in(&a);
                    v.extend(0..100u64);
                    core::hint::black_box(&v);
                    drop(v);
                    if !P::BULK {
                        for (p, l) in first.into_iter().chain(more) {
                            // SAFETY: allocated from this arena with `l`.
                            unsafe { a.deallocate(p, l) };
                        }
                    }
                    drop(a);
                    drop(arena);
                }
            });
            let mut sizes = Sizes::new(16, 1024, 5);
            for _ in 0..n {
                let arena = P::new();
                let a = arena.alloc();
                let first = core::array::from_fn(|_| {
                    let l = sizes.next();
                    (alloc_touch(&a, l), l)
                });
                drop(a);
                tx.send(Sent((arena, first))).unwrap();
            }
            drop(tx);
        });
    };
    run(5_000);
    let n = (200_000.0 * scale) as usize;
    Some(timed(n as u64, || run(n)))
}

/// Thread churn beside many live arenas: 1,000 arenas stay alive (one per
/// connection, each holding a block), while short-lived threads (a blocking
/// pool, two alive at a time) each make 500 allocations of 16..=1024 B in
/// one of them, free them and exit. One op = one allocation.
fn thread_churn<P: Peer>(scale: f64) -> Option<Run> {
    if !(P::SYNC && P::FREES && P::ANY_THREAD) {
        return None;
    }
    struct Shared<P>(P);
    // SAFETY: `SYNC` peers may be used from several threads at once.
    unsafe impl<P> Sync for Shared<P> {}
    let arenas: Vec<Shared<P>> = (0..1000).map(|_| Shared(P::new())).collect();
    let held: Vec<_> = arenas
        .iter()
        .map(|a| Sent((alloc_touch(&a.0.alloc(), Layout::new::<[u64; 8]>()), 0)))
        .collect();
    let run = |threads: usize| {
        for pair in 0..threads / 2 {
            std::thread::scope(|s| {
                for k in 0..2 {
                    let arena = &arenas[(pair * 2 + k) * 7 % arenas.len()];
                    s.spawn(move || {
                        let a = arena.0.alloc();
                        let mut sizes = Sizes::new(16, 1024, pair as u64 + 7);
                        let blocks: Vec<_> = (0..500)
                            .map(|_| {
                                let l = sizes.next();
                                (alloc_touch(&a, l), l)
                            })
                            .collect();
                        for (p, l) in blocks {
                            // SAFETY: allocated from this arena with `l`.
                            unsafe { a.deallocate(p, l) };
                        }
                    });
                }
            });
        }
    };
    run(100);
    let threads = ((2_000.0 * scale) as usize).max(2);
    let r = timed(threads as u64 * 500, || run(threads));
    for (a, Sent((p, _))) in arenas.iter().zip(held) {
        // SAFETY: allocated above with this layout.
        unsafe { a.0.alloc().deallocate(p, Layout::new::<[u64; 8]>()) };
    }
    Some(r)
}

/// More threads than cores on one shared arena (larson-like): `--threads`
/// threads (default: twice the cores) each churn a ring of 1,024 blocks of
/// 16..=1024 B; every ring starts filled by the previous thread, so its
/// first frees cross threads. One op = one free and one allocation.
fn shared<P: Peer>(scale: f64, threads: usize) -> Option<Run> {
    if !(P::SYNC && P::FREES && P::ANY_THREAD) {
        return None;
    }
    struct Shared<P>(P);
    // SAFETY: `SYNC` peers may be used from several threads at once.
    unsafe impl<P> Sync for Shared<P> {}
    let arena = Shared(P::new());
    let per = (2_000_000.0 * scale) as usize / threads;
    type Ring = Vec<(NonNull<u8>, Layout)>;
    let mut rings: Vec<Sent<Ring>> = (0..threads)
        .map(|t| {
            let a = arena.0.alloc();
            let mut sizes = Sizes::new(16, 1024, 100 + t as u64);
            Sent(
                (0..1024)
                    .map(|_| {
                        let l = sizes.next();
                        (alloc_touch(&a, l), l)
                    })
                    .collect(),
            )
        })
        .collect();
    rings.rotate_left(1);
    let mut run = || {
        std::thread::scope(|s| {
            let arena = &arena;
            let handles: Vec<_> = rings
                .drain(..)
                .enumerate()
                .map(|(t, ring)| {
                    s.spawn(move || {
                        let mut ring = ring.into_inner();
                        let a = arena.0.alloc();
                        let mut sizes = Sizes::new(16, 1024, 200 + t as u64);
                        for i in 0..per {
                            let slot = &mut ring[i & 1023];
                            // SAFETY: allocated from this arena with `slot.1`.
                            unsafe { a.deallocate(slot.0, slot.1) };
                            let l = sizes.next();
                            *slot = (alloc_touch(&a, l), l);
                        }
                        Sent(ring)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
    let mut rings_out = Vec::new();
    let r = timed((per * threads) as u64, || rings_out = run());
    let a = arena.0.alloc();
    for Sent(ring) in rings_out {
        for (p, l) in ring {
            // SAFETY: allocated from this arena with `l`.
            unsafe { a.deallocate(p, l) };
        }
    }
    Some(r)
}

/// Lines of `/proc/self/maps`: the process's mappings (VMAs) now.
fn mappings() -> Option<u64> {
    std::fs::read_to_string("/proc/self/maps")
        .ok()
        .map(|s| s.lines().count() as u64)
}

/// The live-arena workloads stop making arenas (and report how many they
/// made) once the process's RSS passes half the machine's memory, or the
/// build phase of a round passes `--build-cap` seconds (default 10; the
/// children read `SMALLMID_BUILD_CAP_S`): some peers need hundreds of KiB
/// and superlinear time per arena, and would take the machine's memory or
/// minutes per run.
fn build_cap_s() -> u64 {
    std::env::var("SMALLMID_BUILD_CAP_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// Half of `MemTotal`, in KiB (8 GiB where unknown).
fn rss_cap_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(8 << 20, |kib| kib / 2)
}

/// `n` arenas alive at once, each made and given `N` blocks (layouts from
/// `layout`) in turn, then all dropped in the order they were made. Every
/// peer gets a fresh arena of its own (bumpalo too: one `Bump` per arena);
/// peers without bulk release (glibc) free their blocks one by one first.
/// The harness keeps each arena's blocks in a fixed array beside it, for
/// every peer alike. One warm-up round, then one timed round of as many
/// arenas as the warm-up made (fewer than `n` where a cap stopped it: see
/// [`build_cap_s`]); the mappings are counted at the peak (all arenas
/// alive), outside the timing, and the larger count of the two rounds is
/// reported. One op = one arena.
fn live_arenas<P: Peer, const N: usize>(
    n: usize,
    mut layout: impl FnMut() -> Layout,
) -> Option<Run> {
    type Blocks<const N: usize> = [(NonNull<u8>, Layout); N];
    let mut live: Vec<(P, Blocks<N>)> = Vec::with_capacity(n);
    let rss_cap = rss_cap_kib();
    let time_cap = build_cap_s();
    let every = (4096 / N).max(32);
    // One round of (up to) `n` arenas; the RSS cap is checked in the
    // warm-up only (the peak RSS it reads stays high afterwards).
    let mut round = |live: &mut Vec<(P, Blocks<N>)>, n: usize, check_rss: bool| -> Run {
        let (f0, _) = rusage();
        let t = Instant::now();
        let mut stopped = None;
        for i in 0..n {
            if i % every == every - 1 {
                if t.elapsed().as_secs() >= time_cap {
                    stopped = Some(format!("build phase over {time_cap} s"));
                } else if check_rss && rusage().1 > rss_cap {
                    stopped = Some(format!("RSS over {} MiB", rss_cap >> 10));
                }
                if let Some(why) = stopped {
                    stopped = Some(format!("{i} of {n} arenas ({why})"));
                    break;
                }
            }
            let arena = P::new();
            let a = arena.alloc();
            let blocks: Blocks<N> = core::array::from_fn(|_| {
                let l = layout();
                (alloc_touch(&a, l), l)
            });
            drop(a);
            live.push((arena, blocks));
        }
        core::hint::black_box(&live);
        let made = live.len() as u64;
        let build = t.elapsed().as_nanos() as f64;
        let (f1, _) = rusage();
        let maps = mappings();
        let (f2, _) = rusage();
        let t = Instant::now();
        for (arena, blocks) in live.drain(..) {
            if !P::BULK {
                let a = arena.alloc();
                for (p, l) in blocks {
                    // SAFETY: allocated from this arena with `l`.
                    unsafe { a.deallocate(p, l) };
                }
            }
            drop(arena);
        }
        let ns = build + t.elapsed().as_nanos() as f64;
        let (f3, _) = rusage();
        Run {
            ns,
            ops: made,
            faults: (f1 - f0) + (f3 - f2),
            maps,
            stopped,
        }
    };
    let warm = round(&mut live, n, true);
    let mut r = round(&mut live, warm.ops as usize, false);
    r.maps = r.maps.max(warm.maps);
    r.stopped = match (&warm.stopped, &r.stopped) {
        (None, None) => None,
        (Some(w), None) => Some(format!("warm-up: {w}; timed round: {} arenas", r.ops)),
        (None, Some(t)) => Some(format!("timed round: {t}")),
        (Some(w), Some(t)) => Some(format!("warm-up: {w}; timed round: {t}")),
    };
    Some(r)
}

/// 10,000 arenas alive at once, each with 32 blocks of 16..=1024 B (about
/// 16 KiB of data per arena), then all dropped.
fn many_arenas<P: Peer>(scale: f64) -> Option<Run> {
    let mut sizes = Sizes::new(16, 1024, 7);
    live_arenas::<P, 32>((10_000.0 * scale) as usize, || sizes.next())
}

/// 100,000 arenas alive at once, each holding one `u64`, then all dropped.
fn tiny_arenas<P: Peer>(scale: f64) -> Option<Run> {
    live_arenas::<P, 1>((100_000.0 * scale) as usize, Layout::new::<u64>)
}

/// A `hashbrown::HashMap<u64, u64>` made with `new_in` (no capacity: it
/// grows, a new table each time, the old one freed), 1,000,000 inserts of
/// distinct keys, 1,000,000 lookups (in insertion order), then dropped with
/// its arena (bumpalo: one `Bump`, `reset()` after each round). One warm-up
/// round, then one timed round. One op = one insert and one lookup.
fn hashmap<P: Peer>(scale: f64) -> Option<Run> {
    let n = (1_000_000.0 * scale) as u64;
    let key = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut kept = P::RESETS.then(P::new);
    let mut round = || {
        let fresh = kept.is_none().then(P::new);
        let arena = fresh.as_ref().or(kept.as_ref()).unwrap();
        let mut m = hashbrown::HashMap::new_in(arena.alloc());
        for i in 0..n {
            m.insert(key(i), i);
        }
        let mut sum = 0u64;
        for i in 0..n {
            sum = sum.wrapping_add(m[&key(i)]);
        }
        assert_eq!(sum, n.wrapping_mul(n.wrapping_sub(1)) / 2);
        drop(m);
        drop(fresh);
        if let Some(k) = kept.as_mut() {
            k.reset();
        }
    };
    round();
    Some(timed(n, round))
}

/// A small node, as a tree or list would hold.
#[derive(Clone, Copy)]
struct Node(#[allow(dead_code)] [u64; 4]); // the payload: written, never read

/// Allocate 1M small boxed values into a `Vec`, then drop them all.
fn boxes(peer: &str, scale: f64) -> Run {
    let n = (1_000_000.0 * scale) as usize;
    fn go<B>(n: usize, mut make: impl FnMut(usize) -> B) -> Run {
        let mut keep = Vec::with_capacity(n);
        let mut round = |keep: &mut Vec<B>| {
            keep.extend((0..n).map(&mut make));
            core::hint::black_box(&keep);
            keep.clear();
        };
        round(&mut keep);
        timed(n as u64, || round(&mut keep))
    }
    let node = |i: usize| Node([i as u64; 4]);
    match peer {
        "ArenaBox" => {
            let arena = smallmid::SmallMidArena::new();
            go(n, |i| arena.alloc(node(i)))
        }
        "Box<T, &SmallMidArena>" => {
            let arena = smallmid::SmallMidArena::new();
            go(n, |i| allocator_api2::boxed::Box::new_in(node(i), &arena))
        }
        "Box (glibc)" => go(n, |i| Box::new(node(i))),
        "bumpalo Box" => {
            let bump = bumpalo::Bump::new();
            go(n, |i| bumpalo::boxed::Box::new_in(node(i), &bump))
        }
        _ => panic!("unknown peer {peer}"),
    }
}
const BOX_PEERS: [&str; 4] = [
    "ArenaBox",
    "Box<T, &SmallMidArena>",
    "Box (glibc)",
    "bumpalo Box",
];

// ---------------------------------------------------------------- driver

const WORKLOADS: [(&str, &str); 15] = [
    ("churn", "mimalloc"),
    ("churn-small", "mimalloc"),
    ("churn-large", "mimalloc"),
    ("fill-drop", "mimalloc heap"),
    ("per-request", "bumpalo"),
    ("xthread", "mimalloc"),
    ("boxes", "Box (glibc)"),
    ("hop", "mimalloc"),
    ("thread-churn", "system (glibc)"),
    ("shared", "mimalloc"),
    ("reset", "bumpalo"),
    ("many-arenas", "bumpalo"),
    ("tiny-arenas", "bumpalo"),
    ("hashmap", "system (glibc)"),
    ("survivors", "mimalloc heap"),
];

fn peers_of(workload: &str) -> &'static [&'static str] {
    match workload {
        "boxes" => &BOX_PEERS,
        "reset" => &RESET_PEERS,
        "thread-churn" | "shared" => &SHARED_PEERS,
        "many-arenas" | "tiny-arenas" => &ARENA_PEERS,
        "hashmap" => &MAP_PEERS,
        _ => &PEERS,
    }
}
const PEERS: [&str; 6] = [
    "smallmid",
    "mimalloc",
    "mimalloc heap",
    "system (glibc)",
    "bumpalo",
    "blink-alloc",
];
/// Arenas kept per worker and reset per request, as bumpalo users do.
const RESET_PEERS: [&str; 2] = ["smallmid reset()", "bumpalo"];
/// One arena per user (session, document, ...): the allocators that make
/// arenas (a mimalloc heap, a `Bump`), and glibc, an "arena" there being its
/// list of blocks, freed one by one.
const ARENA_PEERS: [&str; 4] = ["smallmid", "bumpalo", "mimalloc heap", "system (glibc)"];
/// A growing hash map's tables.
const MAP_PEERS: [&str; 4] = ["smallmid", "mimalloc heap", "system (glibc)", "bumpalo"];
/// Allocators many threads share at once.
const SHARED_PEERS: [&str; 4] = ["smallmid", "mimalloc", "system (glibc)", "blink-alloc"];

fn run_peer<P: Peer>(workload: &str, scale: f64) -> Option<Run> {
    match workload {
        "churn" => churn::<P>(scale),
        "churn-small" => churn_sized::<P>(scale, 8, 64, 4096),
        "churn-large" => churn_sized::<P>(scale, 32 << 10, 256 << 10, 64),
        "fill-drop" => fill_drop::<P>(scale),
        "survivors" => survivors::<P>(scale),
        "per-request" | "reset" => per_request::<P>(scale),
        "xthread" => xthread::<P>(scale),
        "hop" => hop::<P>(scale),
        "thread-churn" => thread_churn::<P>(scale),
        "shared" => shared::<P>(scale, threads()),
        "many-arenas" => many_arenas::<P>(scale),
        "tiny-arenas" => tiny_arenas::<P>(scale),
        "hashmap" => hashmap::<P>(scale),
        _ => panic!("unknown workload {workload}"),
    }
}

fn child(workload: &str, peer: &str, scale: f64) {
    let r = if workload == "boxes" {
        Some(boxes(peer, scale))
    } else {
        match_peer(workload, peer, scale)
    };
    // Minor faults of the whole process, start to end: first touch and
    // warm-up included.
    let (total_faults, maxrss) = rusage();
    match r {
        Some(r) => println!(
            "RESULT {} {} {} {} {} {} {}",
            r.ns,
            r.ops,
            r.faults,
            maxrss,
            total_faults,
            r.maps.map_or("-".to_string(), |m| m.to_string()),
            r.stopped.as_deref().unwrap_or("")
        ),
        None => println!("RESULT n/a"),
    }
}

fn match_peer(workload: &str, peer: &str, scale: f64) -> Option<Run> {
    match peer {
        "smallmid" => run_peer::<smallmid::SmallMidArena>(workload, scale),
        "smallmid reset()" => run_peer::<SmallReset>(workload, scale),
        "mimalloc" => run_peer::<MiGlobal>(workload, scale),
        "mimalloc heap" => run_peer::<MiHeap>(workload, scale),
        "system (glibc)" => run_peer::<System>(workload, scale),
        "bumpalo" => run_peer::<bumpalo::Bump>(workload, scale),
        "blink-alloc" => run_peer::<Blink>(workload, scale),
        _ => panic!("unknown peer {peer}"),
    }
}

#[derive(Default, Clone)]
struct Samples {
    ns_per_op: Vec<f64>,
    rss_kb: Vec<f64>,
    faults_per_mop: Vec<f64>,
    /// Minor faults of the whole child process (per run, not per op).
    faults_total: Vec<f64>,
    /// Lines of `/proc/self/maps` at the peak, where measured.
    maps: Vec<f64>,
    /// Runs that stopped short of the workload's size: why and where.
    stopped: Vec<String>,
    na: bool,
}

/// Threads of the `shared` workload: `SMALLMID_THREADS`, else twice the
/// cores (the child processes inherit it from `--threads`).
fn threads() -> usize {
    std::env::var("SMALLMID_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(2, |n| n.get()))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let scale: f64 = arg("--scale").map_or(1.0, |s| s.parse().unwrap());
    if let Some(w) = arg("--child") {
        child(&w, &arg("--peer").unwrap(), scale);
        return;
    }
    let reps: usize = arg("--reps").map_or(5, |s| s.parse().unwrap());
    if let Some(t) = arg("--threads") {
        std::env::set_var("SMALLMID_THREADS", t);
    }
    if let Some(t) = arg("--build-cap") {
        std::env::set_var("SMALLMID_BUILD_CAP_S", t);
    }
    eprintln!("shared workload: {} threads", threads());
    let only: Option<String> = arg("--only");
    let exe = std::env::current_exe().unwrap();
    let mut results = std::collections::HashMap::<(usize, usize), Samples>::new();
    eprintln!("{reps} repetitions, scale {scale}, each run in its own process, interleaved");
    for rep in 0..reps {
        for (wi, (w, _)) in WORKLOADS.iter().enumerate() {
            if only.as_deref().is_some_and(|o| o != *w) {
                continue;
            }
            for (pi, p) in peers_of(w).iter().enumerate() {
                let out = Command::new(&exe)
                    .args(["--child", w, "--peer", p, "--scale", &scale.to_string()])
                    .output()
                    .expect("spawn child");
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text
                    .lines()
                    .find(|l| l.starts_with("RESULT"))
                    .unwrap_or_else(|| {
                        panic!("{w}/{p} failed: {}", String::from_utf8_lossy(&out.stderr))
                    });
                let s = results.entry((wi, pi)).or_default();
                let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
                if fields.len() >= 6 {
                    let f: Vec<f64> = fields[..5]
                        .iter()
                        .map(|x| x.parse().expect("child's RESULT line"))
                        .collect();
                    s.ns_per_op.push(f[0] / f[1]);
                    s.faults_per_mop.push(f[2] / f[1] * 1e6);
                    s.rss_kb.push(f[3]);
                    s.faults_total.push(f[4]);
                    if let Ok(m) = fields[5].parse() {
                        s.maps.push(m);
                    }
                    if fields.len() > 6 {
                        s.stopped.push(fields[6..].join(" "));
                    }
                } else {
                    s.na = true;
                }
            }
        }
        eprintln!("  repetition {} of {reps} done", rep + 1);
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    println!(
        "| workload | allocator | ns/op | M ops/s | vs ref | peak RSS MiB \
         | minor faults / M ops after warm-up | minor faults total | mappings at peak |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (wi, (w, reference)) in WORKLOADS.iter().enumerate() {
        let peers = peers_of(w);
        let ri = peers.iter().position(|p| p == reference).unwrap();
        let Some(r) = results.get(&(wi, ri)) else {
            continue;
        };
        let ref_ns = median(&r.ns_per_op);
        for (pi, p) in peers.iter().enumerate() {
            let s = &results[&(wi, pi)];
            if s.na {
                println!("| {w} | {p} | n/a | | | | | | |");
                continue;
            }
            let ns = median(&s.ns_per_op);
            let mut mark = "";
            if !s.stopped.is_empty() {
                mark = "*";
                let mut why: Vec<(usize, &str)> = Vec::new();
                for m in &s.stopped {
                    match why.iter_mut().find(|(_, x)| *x == m.as_str()) {
                        Some((k, _)) => *k += 1,
                        None => why.push((1, m)),
                    }
                }
                let why: Vec<String> = why.iter().map(|(k, m)| format!("{k}× {m}")).collect();
                notes.push(format!(
                    "* {w} / {p}: stopped short in {} of {} runs (medians mix them with any \
                     full runs; a stopped run's numbers are for the arenas it made): {}",
                    s.stopped.len(),
                    s.ns_per_op.len(),
                    why.join("; ")
                ));
            }
            let unit = match *w {
                "per-request" | "reset" | "hop" => " (per request)",
                "many-arenas" | "tiny-arenas" => " (per arena)",
                "hashmap" => " (insert+lookup)",
                _ => "",
            };
            let maps = if s.maps.is_empty() {
                String::new()
            } else {
                format!("{:.0}", median(&s.maps))
            };
            println!(
                "| {w} | {p}{mark} | {ns:.1}{unit} | {:.2} | {:.2}× {reference} | {:.1} | {:.0} | {:.0} | {maps} |",
                1e3 / ns,
                ns / ref_ns,
                median(&s.rss_kb) / 1024.0,
                median(&s.faults_per_mop),
                median(&s.faults_total)
            );
            rows.push(Row {
                workload: w,
                peer: p,
                rel: ns / ref_ns,
                rss_mib: median(&s.rss_kb) / 1024.0,
            });
        }
    }
    for n in &notes {
        println!("\n{n}");
    }
    if rows.is_empty() {
        return;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compare.svg");
    match chart(&rows, &path) {
        Ok(()) => eprintln!("chart: {}", path.display()),
        Err(e) => eprintln!("chart: cannot write {}: {e}", path.display()),
    }
}

// ---------------------------------------------------------------- chart

/// One line of the results table, as charted.
struct Row {
    workload: &'static str,
    peer: &'static str,
    /// ns/op divided by the workload's reference peer's.
    rel: f64,
    rss_mib: f64,
}

/// Grouped bars per workload, one colour per allocator: ns/op relative to
/// the workload's reference peer (log scale, the reference is 1), and peak
/// RSS. SVG only: plotters' SVG backend writes text as `<text>`, so no font
/// files are needed.
fn chart(rows: &[Row], path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut workloads: Vec<&str> = Vec::new();
    let mut peers: Vec<&str> = Vec::new();
    for r in rows {
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload);
        }
        if !peers.contains(&r.peer) {
            peers.push(r.peer);
        }
    }
    let nw = workloads.len();
    // Bar of `r`: its slot among its workload's charted peers.
    let span = |r: &Row| -> (f64, f64) {
        let wi = workloads.iter().position(|w| *w == r.workload).unwrap();
        let mine: Vec<&str> = rows
            .iter()
            .filter(|x| x.workload == r.workload)
            .map(|x| x.peer)
            .collect();
        let j = mine.iter().position(|p| *p == r.peer).unwrap() as f64;
        let width = 0.8 / mine.len() as f64;
        let x0 = wi as f64 - 0.4 + j * width;
        (x0, x0 + width * 0.9)
    };
    let colour = |p: &str| Palette99::pick(peers.iter().position(|x| *x == p).unwrap());
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < nw {
            workloads[i as usize].to_string()
        } else {
            String::new()
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(480);
    let x = -0.5..nw as f64 - 0.5;

    let rels = rows
        .iter()
        .map(|r| r.rel)
        .filter(|v| v.is_finite() && *v > 0.0);
    let lo = rels.clone().fold(1.0f64, f64::min) / 1.5;
    let hi = rels.fold(1.0f64, f64::max) * 1.5;
    let mut c = ChartBuilder::on(&top)
        .caption(
            "ns/op relative to the workload's reference peer (log; lower is faster)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), (lo..hi).log_scale())?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(nw)
        .x_label_formatter(&label)
        .y_desc("× reference")
        .draw()?;
    for &p in &peers {
        let col = colour(p);
        c.draw_series(rows.iter().filter(|r| r.peer == p && r.rel > 0.0).map(|r| {
            let (x0, x1) = span(r);
            Rectangle::new([(x0, lo), (x1, r.rel)], col.filled())
        }))?
        .label(p)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled()));
    }
    c.draw_series(std::iter::once(PathElement::new(
        vec![(-0.5, 1.0), (nw as f64 - 0.5, 1.0)],
        BLACK,
    )))?;
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let rss_hi = rows.iter().map(|r| r.rss_mib).fold(1.0f64, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&bottom)
        .caption("peak RSS, MiB (lower is better)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x, 0.0..rss_hi)?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(nw)
        .x_label_formatter(&label)
        .y_desc("MiB")
        .draw()?;
    for &p in &peers {
        let col = colour(p);
        c.draw_series(rows.iter().filter(|r| r.peer == p).map(|r| {
            let (x0, x1) = span(r);
            Rectangle::new([(x0, 0.0), (x1, r.rss_mib)], col.filled())
        }))?;
    }
    root.present()?;
    Ok(())
}
