//! The process-wide warm cache of empty SuperSlabs, carved from regions.
//!
//! # Regions
//! SuperSlabs are not mapped one by one: address space is reserved in
//! regions of [`REGION_SUPERSLABS`] SuperSlabs (64 MiB, huge-page aligned,
//! `MAP_NORESERVE`, transparent huge pages asked for), and SuperSlabs are
//! carved from them. A process with thousands of SuperSlabs in use has tens
//! of mappings, not thousands. Each SuperSlab of a region is
//! - **in use**: held by an arena;
//! - **warm**: free, its pages committed (the warm cache proper): an arena
//!   takes it with no system call and no page fault;
//! - **cold**: free, no pages: never touched, or decommitted
//!   (`MADV_DONTNEED`). Taking it costs no mapping, only first-touch faults;
//! - **busy**: being decommitted right now, outside the lock.
//!
//! A region is never unmapped while any of its SuperSlabs is in use, warm or
//! busy. Fully cold regions stay reserved for the next peak, unless more
//! than [`COLD_RESERVE`] times the warm cap is reserved that way (then the
//! excess regions are unmapped whole, but for one of each kind).
//!
//! Where pages cannot be decommitted (the `std::alloc` backend under miri
//! and loom, non-unix), a region is a single SuperSlab and "decommit" means
//! unmapping it, which is the previous one-mapping-per-SuperSlab scheme.
//!
//! # Bound
//! A fixed small cap would send a workload that fills and drops 128 MiB per
//! round back to the OS every round (the seed's failure). Instead the cache
//! keeps what recent demand shows is needed, and decays like jemalloc's
//! dirty-page decay: it remembers the peak number of SuperSlabs in use in
//! the current and the previous [`DECAY`] epoch, and keeps warm at most
//!
//! `min(limit, max(FLOOR, recent_peak - in_use))`
//!
//! SuperSlabs; the excess is decommitted when memory is given back, and
//! when a thread drops arenas (see [`tick`]: arenas recycled as spares give
//! nothing back, so a server whose load fell would otherwise keep its
//! peak). When load goes away, two epochs later the cache shrinks to
//! `FLOOR` at the next release or look, or at once through
//! [`crate::trim_warm_cache`]. Decommitting
//! prefers SuperSlabs whose 2 MiB buddy is already cold, then whole pairs,
//! so huge pages are dropped whole rather than split (a split one comes
//! back as small pages).
//!
//! Invariants (under the lock): `regions` is sorted by base and their
//! ranges are disjoint; in each region `warm`, `cold` and `busy` are
//! disjoint; `cached` is the number of warm bits, `cold` the number of cold
//! bits, over all regions; `in_use` counts the SuperSlabs handed out and not
//! given back. Every SuperSlab is in exactly one of the four states.

use crate::os::{self, HUGE_PAGE};
use crate::superslab::SUPERSLAB_SIZE;
use crate::sync::{global, lock, thread_local_const, try_lock, AtomicU64, Mutex, Ordering};
use core::cell::Cell;
use core::ptr::NonNull;
use smallvec::SmallVec;
use std::time::{Duration, Instant};

/// Length of one decay epoch.
pub(crate) const DECAY: Duration = Duration::from_secs(1);
/// SuperSlabs kept warm regardless of demand (8 MiB).
pub(crate) const FLOOR: usize = 8;
/// Default hard cap on warm SuperSlabs (1 GiB).
pub(crate) const DEFAULT_LIMIT: usize = 1024;
/// How far under the bound a release that passed it decommits (16 MiB).
const RELEASE_BATCH: usize = 16;
/// SuperSlabs per region.
pub(crate) const REGION_SUPERSLABS: usize = if os::CAN_DECOMMIT { 64 } else { 1 };
/// Bytes of a region.
pub(crate) const REGION_SIZE: usize = REGION_SUPERSLABS * SUPERSLAB_SIZE;
/// Alignment of a region: a huge-page boundary, so the pages of each pair
/// of SuperSlabs can be one transparent huge page.
const REGION_ALIGN: usize = if os::CAN_DECOMMIT && HUGE_PAGE > SUPERSLAB_SIZE {
    HUGE_PAGE
} else {
    SUPERSLAB_SIZE
};
/// Fully cold regions stay reserved up to this many times the warm cap.
pub(crate) const COLD_RESERVE: usize = 2;
/// A thread's arena drops per look at the bound (see [`tick`]).
const LOOK_EVERY: u32 = 64;

/// One bit per SuperSlab of a region.
type Mask = u64;
const FULL: Mask = if REGION_SUPERSLABS == 64 {
    Mask::MAX
} else {
    (1 << REGION_SUPERSLABS) - 1
};
const _: () = assert!(REGION_SUPERSLABS <= 64 && REGION_ALIGN % SUPERSLAB_SIZE == 0);

/// A reserved region. In use: the SuperSlabs in none of the three masks.
struct Region {
    /// Start of the reservation of [`REGION_SIZE`] bytes.
    base: NonNull<u8>,
    /// Huge pages asked for: SuperSlabs for arenas that grow past their
    /// first (dense use). First SuperSlabs of arenas (one per small
    /// arena: sparse) come from regions without, so a thousand small
    /// arenas do not each pull in 2 MiB.
    dense: bool,
    warm: Mask,
    cold: Mask,
    busy: Mask,
}

impl Region {
    fn superslab(&self, i: usize) -> NonNull<u8> {
        // SAFETY: `i < REGION_SUPERSLABS`, so the address is inside the
        // region, hence not null.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(i * SUPERSLAB_SIZE)) }
    }
}

/// Bit `i` set iff bit `i ^ 1` is set in `m`: the 2 MiB buddies.
fn buddies(m: Mask) -> Mask {
    const EVEN: Mask = 0x5555_5555_5555_5555;
    ((m >> 1) & EVEN) | ((m & EVEN) << 1)
}

struct Warm {
    regions: Vec<Region>,
    /// Warm SuperSlabs.
    cached: usize,
    /// Cold SuperSlabs.
    cold: usize,
    /// SuperSlabs held by live arenas.
    in_use: usize,
    peak_cur: usize,
    peak_prev: usize,
    epoch: Option<Instant>,
    /// Hard cap on `cached`, in SuperSlabs.
    limit: usize,
}

// SAFETY: the region pointers are only followed under the global mutex or,
// for busy SuperSlabs, by the one thread that marked them busy.
unsafe impl Send for Warm {}

global! {
    /// `Warm::cached`, mirrored under the lock for [`tick`]'s look.
    static CACHED: AtomicU64 = AtomicU64::new(0);
}

thread_local_const! {
    /// Arena drops on this thread, for [`tick`].
    static DROPS: Cell<u32> = Cell::new(0);
}

global! {
    static WARM: Mutex<Warm> = Mutex::new(Warm {
        regions: Vec::new(),
        cached: 0,
        cold: 0,
        in_use: 0,
        peak_cur: 0,
        peak_prev: 0,
        epoch: None,
        limit: DEFAULT_LIMIT,
    });
}

/// SuperSlabs marked busy, to decommit: (region base, bits).
type Picks = SmallVec<[(NonNull<u8>, Mask); 4]>;
/// Regions taken off the list, to unmap.
type Doomed = SmallVec<[NonNull<u8>; 4]>;

impl Warm {
    fn allowed(&self) -> usize {
        let recent = self.peak_cur.max(self.peak_prev);
        recent
            .saturating_sub(self.in_use)
            .max(FLOOR)
            .min(self.limit)
    }

    /// Mirrors `cached` for [`tick`] (call after changing it).
    fn publish(&self) {
        CACHED.store(self.cached as u64, Ordering::Relaxed);
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let start = *self.epoch.get_or_insert(now);
        let age = now.saturating_duration_since(start);
        if age >= DECAY {
            self.peak_prev = if age >= 2 * DECAY {
                self.in_use
            } else {
                self.peak_cur
            };
            self.peak_cur = self.in_use;
            self.epoch = Some(now);
        }
    }

    /// Index of the region holding `p`.
    fn region_of(&self, p: NonNull<u8>) -> usize {
        let addr = p.as_ptr() as usize;
        let i = self
            .regions
            .partition_point(|r| r.base.as_ptr() as usize <= addr);
        debug_assert!(i > 0, "SuperSlab {p:p} is in no region");
        i - 1
    }

    /// Takes a free SuperSlab from the mask `pick` selects, lowest region
    /// first, so high regions empty out.
    fn take(&mut self, pick: impl Fn(&mut Region) -> Option<&mut Mask>) -> Option<NonNull<u8>> {
        self.regions.iter_mut().find_map(|r| {
            let m = pick(r)?;
            if *m == 0 {
                return None;
            }
            let i = m.trailing_zeros() as usize;
            *m &= !(1 << i);
            Some(r.superslab(i))
        })
    }

    /// Marks all but `keep` warm SuperSlabs busy and returns them; where
    /// nothing can be decommitted, takes their regions off the list instead.
    fn take_excess(&mut self, keep: usize) -> (Picks, Doomed) {
        let (mut picks, mut doomed) = (Picks::new(), Doomed::new());
        let mut n = self.cached.saturating_sub(keep);
        if !os::CAN_DECOMMIT {
            self.cached -= n;
            self.publish();
            // One SuperSlab per region: a warm one is a whole free region.
            let mut i = self.regions.len();
            while n > 0 && i > 0 {
                i -= 1;
                if self.regions[i].warm == FULL {
                    doomed.push(self.regions.remove(i).base);
                    n -= 1;
                }
            }
            debug_assert_eq!(n, 0);
            return (picks, doomed);
        }
        // Decommitting half of a huge page splits it, and its pages come
        // back small (measured: 65,536 faults to refill 256 MiB instead of
        // 128). So: first SuperSlabs whose buddy is already cold or going
        // (their huge page is gone anyway); then whole pairs, in one
        // madvise, even if that leaves one SuperSlab fewer warm than
        // allowed; only then halves whose buddy is in use. High regions
        // first, so in-use SuperSlabs gather low.
        for pass in 0..3 {
            for r in self.regions.iter_mut().rev() {
                if n == 0 {
                    break;
                }
                let mut cand = match pass {
                    0 => r.warm & buddies(r.cold | r.busy),
                    1 => r.warm & buddies(r.warm),
                    _ => r.warm,
                };
                let mut bits = 0;
                while n > 0 && cand != 0 {
                    let mut b = cand & cand.wrapping_neg();
                    if pass == 1 {
                        b |= buddies(b);
                    }
                    bits |= b;
                    cand &= !b;
                    n = n.saturating_sub(b.count_ones() as usize);
                }
                if bits != 0 {
                    r.warm &= !bits;
                    r.busy |= bits;
                    self.cached -= bits.count_ones() as usize;
                    match picks.iter_mut().find(|(base, _)| *base == r.base) {
                        Some((_, m)) => *m |= bits,
                        None => picks.push((r.base, bits)),
                    }
                }
            }
        }
        debug_assert_eq!(n, 0);
        if picks.is_empty() {
            doomed = self.unreserve();
        }
        self.publish();
        (picks, doomed)
    }

    /// Turns decommitted busy SuperSlabs cold, then takes off the list the
    /// fully cold regions past the reserve bound.
    fn settle(&mut self, picks: &Picks) -> Doomed {
        for &(base, bits) in picks {
            let i = self.region_of(base);
            let r = &mut self.regions[i];
            debug_assert_eq!(r.busy & bits, bits);
            r.busy &= !bits;
            r.cold |= bits;
            self.cold += bits.count_ones() as usize;
        }
        self.unreserve()
    }

    /// Takes off the list the fully cold regions, highest first, while they
    /// reserve more than [`COLD_RESERVE`] times the warm cap; the last
    /// fully cold region of each kind (huge-paged or not) stays. Under a
    /// small cap, an arena whose SuperSlabs (of both kinds: a first one and
    /// one for a long span) all went cold would otherwise map a region
    /// anew every time it is made again: SuperSlabs are taken from regions
    /// of their own kind only.
    fn unreserve(&mut self) -> Doomed {
        let mut doomed = Doomed::new();
        let keep = self.limit.saturating_mul(COLD_RESERVE);
        let cold = |regions: &[Region], dense: bool| {
            regions
                .iter()
                .filter(|r| r.cold == FULL && r.dense == dense)
                .count()
        };
        let mut reserved =
            (cold(&self.regions, false) + cold(&self.regions, true)) * REGION_SUPERSLABS;
        let mut i = self.regions.len();
        while reserved > keep && i > 0 {
            i -= 1;
            let r = &self.regions[i];
            if r.cold == FULL && cold(&self.regions, r.dense) > 1 {
                doomed.push(self.regions.remove(i).base);
                self.cold -= REGION_SUPERSLABS;
                reserved -= REGION_SUPERSLABS;
            }
        }
        doomed
    }
}

/// Decommits what [`Warm::take_excess`] picked and unmaps what it (or the
/// reserve bound) took off; returns how many SuperSlabs left the cache.
fn give_back(picks: Picks, doomed: Doomed) -> usize {
    let mut n = 0;
    for &(base, bits) in &picks {
        let mut rest = bits;
        while rest != 0 {
            // One madvise per run of adjacent SuperSlabs.
            let start = rest.trailing_zeros() as usize;
            let run = (rest >> start).trailing_ones() as usize;
            // SAFETY: the run is inside the region at `base`, whose busy bits
            // we set: no arena holds these SuperSlabs and no one else
            // touches them or unmaps the region until `settle`.
            unsafe {
                os::decommit(
                    NonNull::new_unchecked(base.as_ptr().add(start * SUPERSLAB_SIZE)),
                    run * SUPERSLAB_SIZE,
                )
            };
            let run_bits = (((1u128 << run) - 1) as Mask) << start;
            rest &= !run_bits;
            n += run;
        }
    }
    let doomed = if picks.is_empty() {
        doomed
    } else {
        lock(&WARM).settle(&picks)
    };
    if !os::CAN_DECOMMIT {
        n += doomed.len();
    }
    for base in doomed {
        // SAFETY: a doomed region was taken off the list with every
        // SuperSlab free (warm or cold, none busy), so nothing uses it; it
        // was made by `os::reserve(REGION_SIZE, REGION_ALIGN)`.
        unsafe { os::unmap(base, REGION_SIZE, REGION_ALIGN) };
    }
    n
}

/// Takes a SuperSlab: a warm one if cached, else a cold one of a region,
/// else one of a fresh region; from huge-paged regions if `dense` (an
/// arena growing past its first SuperSlab), else from small-paged ones.
pub(crate) fn acquire(dense: bool) -> Option<NonNull<u8>> {
    {
        let mut w = lock(&WARM);
        w.in_use += 1;
        w.peak_cur = w.peak_cur.max(w.in_use);
        if let Some(p) = w.take(|r| (r.dense == dense).then_some(&mut r.warm)) {
            w.cached -= 1;
            w.publish();
            return Some(p);
        }
        if w.regions.iter().any(|r| r.dense == dense && r.cold != 0) {
            // Its pages must come from the OS again: a request the test
            // hook may refuse.
            if os::refused() {
                w.in_use -= 1;
                return None;
            }
            w.cold -= 1;
            return w.take(|r| (r.dense == dense).then_some(&mut r.cold));
        }
    }
    // No free SuperSlab: reserve a region (outside the lock: a system call).
    let Some(base) = os::reserve(REGION_SIZE, REGION_ALIGN, dense) else {
        lock(&WARM).in_use -= 1;
        return None;
    };
    let mut w = lock(&WARM);
    let r = Region {
        base,
        dense,
        warm: 0,
        cold: FULL & !1,
        busy: 0,
    };
    let p = r.superslab(0);
    let at = w
        .regions
        .partition_point(|x| x.base.as_ptr() < base.as_ptr());
    w.regions.insert(at, r);
    w.cold += REGION_SUPERSLABS - 1;
    Some(p)
}

/// Gives SuperSlabs back; decommits what exceeds the bound.
///
/// # Safety
/// Each pointer came from [`acquire`], is given back once, and its memory is
/// not used afterwards.
pub(crate) unsafe fn release(superslabs: &[NonNull<u8>]) {
    let (picks, doomed) = {
        let mut w = lock(&WARM);
        w.in_use -= superslabs.len();
        for &p in superslabs {
            let i = w.region_of(p);
            let r = &mut w.regions[i];
            let bit = 1 << ((p.as_ptr() as usize - r.base.as_ptr() as usize) / SUPERSLAB_SIZE);
            debug_assert_eq!((r.warm | r.cold | r.busy) & bit, 0, "SuperSlab freed twice");
            r.warm |= bit;
        }
        w.cached += superslabs.len();
        w.publish();
        if w.cached > FLOOR {
            // Only now can the bound bite; reading the clock costs ~20 ns.
            w.tick();
        }
        let keep = w.allowed();
        // Past the bound, down to a little under it: the next small
        // releases then need no `madvise` each (a TLB shootdown on every
        // core). Not for a big release (one call per run already, and the
        // batch would only refault the next round), never under the floor.
        if w.cached > keep {
            let batch = if superslabs.len() >= RELEASE_BATCH {
                0
            } else {
                RELEASE_BATCH.min(keep / 2)
            };
            w.take_excess((keep - batch).max(FLOOR.min(keep)))
        } else {
            (Picks::new(), Doomed::new())
        }
    };
    give_back(picks, doomed);
}

/// An arena drop's look at the bound: while more than [`FLOOR`] SuperSlabs
/// are warm (after a peak), every [`LOOK_EVERY`]th drop on a thread lets
/// the bound decay and decommits the excess, so RSS follows the load down
/// while arenas are recycled as spares and nothing is released here.
/// Otherwise one relaxed load. A look finding the lock taken skips (another
/// thread is releasing or looking); an idle process keeps its warm cache
/// until the next drop or [`crate::trim_warm_cache`].
pub(crate) fn tick() {
    if CACHED.load(Ordering::Relaxed) as usize <= FLOOR {
        return;
    }
    let due = DROPS
        .try_with(|d| {
            let n = d.get().wrapping_add(1);
            d.set(n);
            n % LOOK_EVERY == 0
        })
        .unwrap_or(false);
    if !due {
        return;
    }
    let (picks, doomed) = {
        let Some(mut w) = try_lock(&WARM) else {
            return;
        };
        w.tick();
        let keep = w.allowed();
        if w.cached <= keep {
            return;
        }
        w.take_excess(keep)
    };
    give_back(picks, doomed);
}

/// Decommits every warm SuperSlab now; returns how many.
pub(crate) fn trim() -> usize {
    let (picks, doomed) = lock(&WARM).take_excess(0);
    give_back(picks, doomed)
}

/// Sets the hard cap on warm SuperSlabs (rounded down to whole ones).
pub(crate) fn set_limit_bytes(bytes: usize) {
    let (picks, doomed) = {
        let mut w = lock(&WARM);
        w.limit = bytes / SUPERSLAB_SIZE;
        let keep = w.allowed();
        w.take_excess(keep)
    };
    give_back(picks, doomed);
}

/// (warm, in use by arenas, hard cap) in SuperSlabs.
pub(crate) fn counts() -> (usize, usize, usize) {
    let w = lock(&WARM);
    (w.cached, w.in_use, w.limit)
}

/// (regions reserved, cold SuperSlabs in them).
pub(crate) fn region_counts() -> (usize, usize) {
    let w = lock(&WARM);
    (w.regions.len(), w.cold)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache with one region whose SuperSlabs not in `warm` or `cold` are
    /// in use. Its base is never followed by `take_excess`.
    fn one_region(warm: Mask, cold: Mask) -> Warm {
        Warm {
            regions: vec![Region {
                dense: false,
                base: NonNull::dangling(),
                warm,
                cold,
                busy: 0,
            }],
            cached: warm.count_ones() as usize,
            cold: cold.count_ones() as usize,
            in_use: 0,
            peak_cur: 0,
            peak_prev: 0,
            epoch: None,
            limit: DEFAULT_LIMIT,
        }
    }

    fn picked(w: &mut Warm, keep: usize) -> Mask {
        let (picks, doomed) = w.take_excess(keep);
        assert!(doomed.is_empty());
        assert_eq!(w.regions[0].busy, picks.iter().fold(0, |m, p| m | p.1));
        w.regions[0].busy
    }

    #[test]
    fn decommit_keeps_huge_pages_whole() {
        if !os::CAN_DECOMMIT {
            return; // one SuperSlab per region: no pairs
        }
        // A buddy already cold goes first: its huge page is split anyway.
        let mut w = one_region(0b0111, 0b1000);
        assert_eq!(picked(&mut w, 2), 0b0100);
        assert_eq!(w.cached, 2);
        // Then a whole pair, not the lowest two.
        let mut w = one_region(0b1110, 0);
        assert_eq!(picked(&mut w, 1), 0b1100);
        assert_eq!(w.cached, 1);
        // A pair even when one SuperSlab would do.
        let mut w = one_region(0b1111, 0);
        assert_eq!(picked(&mut w, 3), 0b0011);
        assert_eq!(w.cached, 2);
        // Halves only when no pair is left.
        let mut w = one_region(0b0101, 0);
        assert_eq!(picked(&mut w, 0), 0b0101);
        assert_eq!(w.cached, 0);
    }
}
