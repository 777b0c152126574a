//! Criterion benchmarks: smallmid against bumpalo (used as its users use
//! it: one `Bump` per worker, `reset()` between requests and rounds), a
//! mimalloc first-class heap and the system allocator.
//!
//! ```sh
//! cargo bench                                   # one thread, a couple of minutes
//! SMALLMID_BENCH_THREADS=1,2 cargo bench -- per-request
//! ```
//!
//! Groups: **churn** (a ring of 1024 blocks of 256..=1024 B: free one,
//! allocate one; bumpalo cannot free, so it is absent), **fill-drop** (10,000
//! blocks of 256..=1024 B, then release them all), **per-request** (32 blocks
//! of 16..=1024 B and a `Vec<u64>` grown to 100, then release), **xthread**
//! (blocks allocated on one thread, freed on another in batches of 64;
//! bumpalo is neither `Sync` nor frees, so it is absent). With `T` threads,
//! every worker runs the same loop at once (xthread: `T` producer/consumer
//! pairs); the time reported is the slowest worker's, per operation.

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec as AVec;
use core::alloc::Layout;
use core::ptr::NonNull;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smallmid::SmallMidArena;
use std::time::{Duration, Instant};

#[path = "../examples/common/mimalloc.rs"]
mod mimalloc;
use mimalloc::MiHeap;

/// Thread counts from `SMALLMID_BENCH_THREADS` (comma-separated; default 1).
fn thread_counts() -> Vec<usize> {
    std::env::var("SMALLMID_BENCH_THREADS")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|t| t.trim().parse().expect("SMALLMID_BENCH_THREADS: numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![1])
}

/// Pseudo-random sizes, the same sequence for every allocator.
struct Sizes {
    x: u64,
    lo: u64,
    span: u64,
}
impl Sizes {
    fn new(lo: usize, hi: usize, seed: u64) -> Self {
        Sizes {
            x: seed | 1,
            lo: lo as u64,
            span: (hi - lo + 1) as u64,
        }
    }
    #[inline(always)]
    fn next(&mut self) -> Layout {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        let size = self.lo + self.x % self.span;
        // SAFETY: sizes are small, alignment 8 is a power of two.
        unsafe { Layout::from_size_align_unchecked(size as usize, 8) }
    }
}

#[inline(always)]
fn alloc_touch<A: Allocator>(a: &A, l: Layout) -> NonNull<u8> {
    let p = a.allocate(l).expect("allocation failed").cast::<u8>();
    // SAFETY: a fresh block of at least 8 bytes: write as a user would.
    unsafe { p.as_ptr().cast::<u64>().write_unaligned(l.size() as u64) };
    p
}

/// Runs `work(worker)` on `threads` threads at once (on this one if 1);
/// each returns the time of its timed part; the slowest counts.
fn parallel(threads: usize, work: impl Fn(usize) -> Duration + Sync) -> Duration {
    if threads == 1 {
        return work(0);
    }
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (work, barrier) = (&work, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    work(t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    })
}

/// How a workload gets memory for one "request" (or round) and gives it
/// back, the way each allocator's users do it.
trait Scope: Sync {
    /// Per-worker state (bumpalo: the worker's `Bump`).
    type Worker;
    type A<'w>: Allocator
    where
        Self: 'w;
    /// Frees blocks one by one before the release (no bulk release).
    const FREE_EACH: bool;
    fn worker(&self) -> Self::Worker;
    /// Runs one request with a fresh allocator; released afterwards.
    fn request<R>(&self, w: &mut Self::Worker, f: impl FnOnce(&Self::A<'_>) -> R) -> R;
}

/// smallmid: a new arena per request, dropped after (a dropped arena is
/// kept as the thread's spare, so the next `new()` is cheap).
struct Smallmid;
impl Scope for Smallmid {
    type Worker = ();
    type A<'w> = &'w SmallMidArena;
    const FREE_EACH: bool = false;
    fn worker(&self) {}
    fn request<R>(&self, _: &mut (), f: impl FnOnce(&&SmallMidArena) -> R) -> R {
        let arena = SmallMidArena::new();
        f(&&arena)
    }
}

/// bumpalo: one `Bump` per worker, reset after each request.
struct Bumpalo;
impl Scope for Bumpalo {
    type Worker = bumpalo::Bump;
    type A<'w> = &'w bumpalo::Bump;
    const FREE_EACH: bool = false;
    fn worker(&self) -> bumpalo::Bump {
        bumpalo::Bump::new()
    }
    fn request<R>(&self, w: &mut bumpalo::Bump, f: impl FnOnce(&&bumpalo::Bump) -> R) -> R {
        let r = f(&&*w);
        w.reset();
        r
    }
}

/// mimalloc: a new first-class heap per request, destroyed after.
struct Mimalloc;
impl Scope for Mimalloc {
    type Worker = ();
    type A<'w> = &'w MiHeap;
    const FREE_EACH: bool = false;
    fn worker(&self) {}
    fn request<R>(&self, _: &mut (), f: impl FnOnce(&&MiHeap) -> R) -> R {
        let heap = MiHeap::new();
        f(&&heap)
    }
}

/// The system allocator: every block freed on its own.
struct System;
impl Scope for System {
    type Worker = ();
    type A<'w> = Global;
    const FREE_EACH: bool = true;
    fn worker(&self) {}
    fn request<R>(&self, _: &mut (), f: impl FnOnce(&Global) -> R) -> R {
        f(&Global)
    }
}

/// `n` blocks of 256..=1024 B, then released; one op = one block.
fn fill_drop<S: Scope>(s: &S, threads: usize, rounds: u64) -> Duration {
    const N: usize = 10_000;
    parallel(threads, |t| {
        let mut w = s.worker();
        let mut sizes = Sizes::new(256, 1024, 2 + t as u64);
        let mut blocks = Vec::with_capacity(N);
        let mut round = |w: &mut S::Worker| {
            s.request(w, |a| {
                for _ in 0..N {
                    let l = sizes.next();
                    blocks.push((alloc_touch(a, l), l));
                }
                if S::FREE_EACH {
                    for &(p, l) in &blocks {
                        // SAFETY: allocated from `a` with this layout.
                        unsafe { a.deallocate(p, l) };
                    }
                }
                blocks.clear();
            })
        };
        round(&mut w); // warm-up
        let t0 = Instant::now();
        for _ in 0..rounds {
            round(&mut w);
        }
        t0.elapsed()
    })
}

/// 32 blocks of 16..=1024 B and a `Vec<u64>` grown to 100, released; one
/// op = one request.
fn per_request<S: Scope>(s: &S, threads: usize, requests: u64) -> Duration {
    parallel(threads, |t| {
        let mut w = s.worker();
        let mut sizes = Sizes::new(16, 1024, 3 + t as u64);
        let mut one = |w: &mut S::Worker| {
            s.request(w, |a| {
                let mut blocks = [(NonNull::<u8>::dangling(), Layout::new::<u8>()); 32];
                for b in blocks.iter_mut() {
                    let l = sizes.next();
                    *b = (alloc_touch(a, l), l);
                }
                let mut v = AVec::new_in(a);
                v.extend(0..100u64);
                std::hint::black_box(&v);
                drop(v);
                if S::FREE_EACH {
                    for (p, l) in blocks {
                        // SAFETY: allocated from `a` with this layout.
                        unsafe { a.deallocate(p, l) };
                    }
                }
            })
        };
        for _ in 0..100 {
            one(&mut w);
        }
        let t0 = Instant::now();
        for _ in 0..requests {
            one(&mut w);
        }
        t0.elapsed()
    })
}

/// A ring of 1024 blocks: free one, allocate one (256..=1024 B). smallmid:
/// one arena shared by the workers; mimalloc: a heap per worker (a heap is
/// bound to its thread); system: global.
fn churn<A: Allocator>(threads: usize, ops: u64, make: impl Fn() -> A + Sync) -> Duration {
    parallel(threads, |t| {
        let a = make();
        let mut sizes = Sizes::new(256, 1024, 1 + t as u64);
        let mut ring: Vec<(NonNull<u8>, Layout)> = (0..1024)
            .map(|_| {
                let l = sizes.next();
                (alloc_touch(&a, l), l)
            })
            .collect();
        let mut step = |n: u64| {
            for i in 0..n as usize {
                let slot = &mut ring[i & 1023];
                // SAFETY: allocated from `a` with this layout.
                unsafe { a.deallocate(slot.0, slot.1) };
                let l = sizes.next();
                *slot = (alloc_touch(&a, l), l);
            }
        };
        step(4096); // warm-up
        let t0 = Instant::now();
        step(ops);
        let d = t0.elapsed();
        for &(p, l) in &ring {
            // SAFETY: as above.
            unsafe { a.deallocate(p, l) };
        }
        d
    })
}

/// Blocks of this batch are owned by whoever holds it.
struct Batch(Vec<(NonNull<u8>, Layout)>);
// SAFETY: plain memory from a `Sync`-freeable allocator, moved whole.
unsafe impl Send for Batch {}

/// `threads` producers allocate 256..=1024 B blocks, each sends batches of
/// 64 to its own consumer, which frees them; one op = one block. `make` runs
/// on the producer (a mimalloc heap is bound to its thread).
fn xthread<A: Allocator + Sync>(threads: usize, ops: u64, make: impl Fn() -> A + Sync) -> Duration {
    parallel(threads, |t| {
        let a = make();
        let a = &a;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(64);
        let mut sizes = Sizes::new(256, 1024, 4 + t as u64);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(move || {
                for b in rx {
                    for (p, l) in b.0 {
                        // SAFETY: allocated from `a` with `l`.
                        unsafe { a.deallocate(p, l) };
                    }
                }
            });
            for _ in 0..ops.div_ceil(64) {
                let v = (0..64)
                    .map(|_| {
                        let l = sizes.next();
                        (alloc_touch(a, l), l)
                    })
                    .collect();
                tx.send(Batch(v)).unwrap();
            }
            drop(tx);
        }); // joins the consumer: its frees are timed too
        t0.elapsed()
    })
}

fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
    per_iter: u64,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .throughput(Throughput::Elements(per_iter));
    g
}

fn benches(c: &mut Criterion) {
    for t in thread_counts() {
        let id = |peer: &str| BenchmarkId::new(peer, format!("{t} threads"));

        let mut g = group(c, "churn", 1);
        let shared = SmallMidArena::new();
        g.bench_function(id("smallmid"), |b| {
            b.iter_custom(|n| churn(t, n, || &shared))
        });
        g.bench_function(id("mimalloc heap"), |b| {
            b.iter_custom(|n| churn(t, n, MiHeap::new))
        });
        g.bench_function(id("system"), |b| b.iter_custom(|n| churn(t, n, || Global)));
        g.finish();
        drop(shared);

        let mut g = group(c, "fill-drop", 10_000);
        g.bench_function(id("smallmid"), |b| {
            b.iter_custom(|n| fill_drop(&Smallmid, t, n))
        });
        g.bench_function(id("bumpalo"), |b| {
            b.iter_custom(|n| fill_drop(&Bumpalo, t, n))
        });
        g.bench_function(id("mimalloc heap"), |b| {
            b.iter_custom(|n| fill_drop(&Mimalloc, t, n))
        });
        g.bench_function(id("system"), |b| {
            b.iter_custom(|n| fill_drop(&System, t, n))
        });
        g.finish();

        let mut g = group(c, "per-request", 1);
        g.bench_function(id("smallmid"), |b| {
            b.iter_custom(|n| per_request(&Smallmid, t, n))
        });
        g.bench_function(id("bumpalo"), |b| {
            b.iter_custom(|n| per_request(&Bumpalo, t, n))
        });
        g.bench_function(id("mimalloc heap"), |b| {
            b.iter_custom(|n| per_request(&Mimalloc, t, n))
        });
        g.bench_function(id("system"), |b| {
            b.iter_custom(|n| per_request(&System, t, n))
        });
        g.finish();

        let mut g = group(c, "xthread", 1);
        let shared = SmallMidArena::new();
        g.bench_function(id("smallmid"), |b| {
            b.iter_custom(|n| xthread(t, n, || &shared))
        });
        g.bench_function(id("mimalloc heap"), |b| {
            b.iter_custom(|n| xthread(t, n, MiHeap::new))
        });
        g.bench_function(id("system"), |b| {
            b.iter_custom(|n| xthread(t, n, || Global))
        });
        g.finish();
    }
}

criterion_group!(arena, benches);
criterion_main!(arena);
