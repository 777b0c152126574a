//! An arena's seed: where an arena starts when no warm spare is at hand.
//!
//! A seed is [`SEED_SIZE`] bytes, carved with other arenas' seeds from
//! shared SuperSlabs (whose header names no heap, see
//! [`SuperSlab::is_seeds`]). Its room serves the arena's first small blocks
//! by bumping. When a block does not fit (or a large one is asked for, or
//! anything that needs the arena's pool), the arena grows its full state
//! ([`super::ArenaState`]) and keeps the seed until the seed's blocks die:
//! the handle's drop, or a reset. So an arena holding a few small values
//! costs 512 bytes, not the two pages its state and first slab touch:
//! 100,000 of them fit in 49 MiB and about 50 SuperSlabs.
//!
//! A seed starts with a [`Front`] whose slots stay null, so the handle's
//! fast path (a slot lookup) runs unchanged on a seed and misses; only
//! the slow path asks which of the two the handle names.
//!
//! Everything in a seed is under its lock: the seed phase is an arena's
//! first few allocations, a cold path, where one uncontended lock beats a
//! protocol. The log keeps each block's class (and a mark when it is freed
//! before the arena grows), so the seed's blocks join the arena's stats
//! and a double free panics. After the arena grows, a seed block freed
//! goes to the freeing thread's cache like any block of its class and is
//! reused from there (the cache counts the free); a flush drops seed
//! blocks, since central lists take slab blocks only (see
//! [`crate::central`]).
//!
//! Invariants: the log's first `n` entries are the blocks carved, in
//! address order, each at its class's alignment from [`ROOM_FROM`] on,
//! ending at `top`; `full` is null until the arena grows, then fixed, and
//! that state's `seed` names this seed until a reset or the drop frees it.

use super::{ArenaState, Front};
use crate::asan;
use crate::size_class::{CLASS_ALIGN, CLASS_SIZE};
use crate::superslab::{SuperSlab, STATE_OFFSET, SUPERSLAB_SIZE};
use crate::sync::{lock, Mutex};
use crate::thread;
use crate::warm;
use core::ptr::{null_mut, with_exposed_provenance_mut, NonNull};

/// Bytes of a seed, and its alignment (so a block's seed is found by
/// masking its address): 512 (under loom, whose lock is larger, more, for
/// the same room).
pub(crate) const SEED_SIZE: usize = ROOM_END.next_power_of_two();
/// Bytes of a seed's room.
const ROOM: usize = 192;
/// Blocks a seed carves at most (its room holds 24 of the smallest class).
const LOG: usize = 24;
/// A log entry's mark: freed before the arena grew.
const FREED: u8 = 0x80;

/// See the module docs.
#[repr(C, align(64))]
pub(crate) struct Seed {
    /// Null slots: the fast path misses on a seed (see [`Front`]).
    front: Front,
    inner: Mutex<SeedInner>,
}

struct SeedInner {
    /// The arena's full state once it grew; null before.
    full: *mut ArenaState,
    /// The arena's memory limit, for the state it grows.
    limit: usize,
    /// Offset from the seed's start past the last block carved.
    top: u16,
    /// Blocks carved.
    n: u8,
    log: [u8; LOG],
}

// SAFETY: `full` is only followed by the seed's arena, whose state it is.
unsafe impl Send for SeedInner {}

/// Where a seed's room starts (after its header) and ends.
pub(crate) const ROOM_FROM: usize = core::mem::size_of::<Seed>();
const ROOM_END: usize = ROOM_FROM + ROOM;
const _: () = assert!(cfg!(loom) || SEED_SIZE == 512);

impl Seed {
    /// The seed's address, with the provenance of its mapping (exposed by
    /// [`crate::os::map`]): the room lies outside the `Seed` value.
    fn base(&self) -> usize {
        self as *const Seed as usize
    }

    /// The seed holding block `b`, a block of a seed.
    ///
    /// # Safety
    /// `b` lies in a live seed's room.
    pub(crate) unsafe fn of<'a>(b: *const u8) -> &'a Seed {
        let base: *const Seed = core::ptr::with_exposed_provenance(b as usize & !(SEED_SIZE - 1));
        // SAFETY: per contract a live seed sits there.
        unsafe { &*base }
    }

    /// The memory limit the arena was built with.
    /// The memory limit the arena was built with, or its state if it grew
    /// (whose limit is the one that counts then).
    pub(crate) fn limit(&self) -> Result<usize, &ArenaState> {
        let g = lock(&self.inner);
        // SAFETY: as in `full`.
        NonNull::new(g.full).map_or(Ok(g.limit), |st| Err(unsafe { st.as_ref() }))
    }

    /// Sets the limit the arena's state will be grown with; `false` if it
    /// grew already (the caller sets the state's).
    pub(crate) fn set_limit(&self, limit: usize) -> bool {
        let mut g = lock(&self.inner);
        g.full.is_null() && {
            g.limit = limit;
            true
        }
    }

    /// The arena's full state, if it grew.
    pub(crate) fn full(&self) -> Option<&ArenaState> {
        // SAFETY: a grown state lives as long as the seed's handle.
        NonNull::new(lock(&self.inner).full).map(|p| unsafe { p.as_ref() })
    }

    /// A block of `class` from the room: `Err(None)` if it does not fit,
    /// `Err(Some(state))` if the arena grew meanwhile.
    pub(crate) fn alloc(&self, class: usize) -> Result<NonNull<u8>, Option<&ArenaState>> {
        let mut g = lock(&self.inner);
        if !g.full.is_null() {
            // SAFETY: as in `full`.
            return Err(Some(unsafe { &*g.full }));
        }
        let (size, align) = (CLASS_SIZE[class] as usize, CLASS_ALIGN[class] as usize);
        let at = (self.base() + g.top as usize).next_multiple_of(align);
        if g.n as usize == LOG || at + size > self.base() + ROOM_END {
            return Err(None);
        }
        let n = g.n as usize;
        g.log[n] = class as u8;
        g.n += 1;
        g.top = (at + size - self.base()) as u16;
        let b: *mut u8 = with_exposed_provenance_mut(at);
        asan::unpoison(b, size);
        Ok(NonNull::new(b).expect("inside a mapping"))
    }

    /// Frees block `b` of `class`, or returns the full state if the arena
    /// grew (the caller frees there).
    ///
    /// # Panics
    /// If `b` is not a live block of `class` in this seed: a double free,
    /// a wrong layout, or a pointer from elsewhere.
    pub(crate) fn free(&self, b: *mut u8, class: usize) -> Option<&ArenaState> {
        let mut g = lock(&self.inner);
        if !g.full.is_null() {
            // SAFETY: as in `full`.
            return Some(unsafe { &*g.full });
        }
        let n = g.n as usize;
        let mut at = self.base() + ROOM_FROM;
        for e in &mut g.log[..n] {
            let c = (*e & !FREED) as usize;
            at = at.next_multiple_of(CLASS_ALIGN[c] as usize);
            if at == b as usize {
                assert!(
                    *e & FREED == 0 && c == class,
                    "smallmid: block {b:p} freed twice or with a wrong layout"
                );
                *e |= FREED;
                asan::poison(b, CLASS_SIZE[c] as usize);
                return None;
            }
            at += CLASS_SIZE[c] as usize;
        }
        panic!("smallmid: freeing {b:p}, which this arena did not hand out");
    }

    /// Calls `f(class, freed)` for every block carved.
    pub(crate) fn for_each_block(&self, mut f: impl FnMut(usize, bool)) {
        let g = lock(&self.inner);
        for &e in &g.log[..g.n as usize] {
            f((e & !FREED) as usize, e & FREED != 0);
        }
    }

    /// Whether `p` lies in the room.
    pub(crate) fn contains(&self, p: usize) -> bool {
        (self.base() + ROOM_FROM..self.base() + ROOM_END).contains(&p)
    }

    /// Frees every block (the arena owned exclusively, not grown).
    pub(crate) fn rewind(&self) {
        let mut g = lock(&self.inner);
        debug_assert!(g.full.is_null());
        asan::poison(
            (self.base() + ROOM_FROM) as *const u8,
            SEED_SIZE - ROOM_FROM,
        );
        g.top = ROOM_FROM as u16;
        g.n = 0;
    }

    /// The arena's full state, made now (see [`ArenaState::create`]) and
    /// named in the seed (and the seed in it) unless the arena grew
    /// already; `None` if the OS refuses memory.
    pub(crate) fn grow(&self) -> Option<&ArenaState> {
        let mut g = lock(&self.inner);
        if g.full.is_null() {
            let st = ArenaState::create(g.limit)?;
            // SAFETY: a fresh state, not yet shared.
            unsafe { st.as_ref() }.adopt_seed(self);
            g.full = st.as_ptr();
        }
        // SAFETY: as in `full`.
        Some(unsafe { &*g.full })
    }
}

/// The seeds of one SuperSlab, kept at its [`STATE_OFFSET`]: under its
/// shard's lock, but for `shard`, which is fixed and read to find the
/// lock (so the run is only ever accessed field by field). A SuperSlab whose seeds all came back goes to the warm
/// cache, unless it is its shard's last with room (then at the next
/// `trim_warm_cache()`).
struct Run {
    /// The shard whose lock guards the run (fixed).
    shard: usize,
    /// Seeds freed, linked through their first word.
    free: *mut u8,
    /// The next seed never handed out, and the SuperSlab's end.
    next: usize,
    end: usize,
    /// Seeds handed out and not freed.
    live: usize,
    /// Links in the shard's list of runs with a seed to give.
    listed: bool,
    prev: *mut Run,
    after: *mut Run,
}

/// Runs of a shard of threads that have a seed to give.
struct Shard {
    avail: *mut Run,
}

// SAFETY: the runs are only followed under the shard's lock.
unsafe impl Send for Shard {}

const SHARDS: usize = 8;

#[cfg(not(loom))]
static SEEDS: [Mutex<Shard>; SHARDS] = [const { Mutex::new(Shard { avail: null_mut() }) }; SHARDS];
#[cfg(loom)]
loom::lazy_static! {
    static ref SEEDS: [Mutex<Shard>; SHARDS] =
        core::array::from_fn(|_| Mutex::new(Shard { avail: null_mut() }));
}

impl Shard {
    /// # Safety
    /// `r` is a live run of this shard, unlisted; the shard's lock is held.
    unsafe fn link(&mut self, r: *mut Run) {
        // SAFETY: per contract.
        unsafe {
            (*r).listed = true;
            (*r).prev = null_mut();
            (*r).after = self.avail;
            if !self.avail.is_null() {
                (*self.avail).prev = r;
            }
        }
        self.avail = r;
    }

    /// # Safety
    /// `r` is a listed run of this shard; the shard's lock is held.
    unsafe fn unlink(&mut self, r: *mut Run) {
        // SAFETY: per contract; listed neighbours are live runs.
        unsafe {
            let (prev, after) = ((*r).prev, (*r).after);
            if prev.is_null() {
                self.avail = after;
            } else {
                (*prev).after = after;
            }
            if !after.is_null() {
                (*after).prev = prev;
            }
            (*r).listed = false;
        }
    }

    /// A fresh run in a SuperSlab from the warm cache (or mapped), listed.
    fn grow(&mut self, shard: usize) -> Option<*mut Run> {
        let base = warm::acquire(false)?.as_ptr();
        // SAFETY: the SuperSlab is ours until its run gives it back; the
        // run fits in its META area.
        unsafe {
            let ss = SuperSlab::init(base, SuperSlab::SEEDS, core::mem::size_of::<Run>());
            let r = base.add(STATE_OFFSET).cast::<Run>();
            r.write(Run {
                shard,
                free: null_mut(),
                next: base as usize + (*ss).blocks_from.next_multiple_of(SEED_SIZE),
                end: base as usize + SUPERSLAB_SIZE,
                live: 0,
                listed: false,
                prev: null_mut(),
                after: null_mut(),
            });
            self.link(r);
            Some(r)
        }
    }

    /// Gives an empty run's SuperSlab back to the warm cache.
    ///
    /// # Safety
    /// `r` is a listed run of this shard with no seed handed out; the
    /// shard's lock is held.
    unsafe fn give_back(&mut self, r: *mut Run) {
        // SAFETY: per contract.
        unsafe { self.unlink(r) };
        let base = r as usize & !(SUPERSLAB_SIZE - 1);
        let ss: *mut u8 = with_exposed_provenance_mut(base);
        asan::poison(ss.wrapping_add(STATE_OFFSET), SUPERSLAB_SIZE - STATE_OFFSET);
        // SAFETY: nothing of the SuperSlab is used any more.
        unsafe { warm::release(&[NonNull::new(ss).expect("mapped")]) };
    }
}

/// A fresh seed for an arena limited to `limit` bytes, from this thread's
/// shard; `None` if the OS refuses a SuperSlab.
pub(crate) fn new_seed(limit: usize) -> Option<NonNull<Seed>> {
    let shard = thread::shard(SHARDS);
    let p = {
        let mut s = lock(&SEEDS[shard]);
        let r = match s.avail {
            r if r.is_null() => s.grow(shard)?,
            r => r,
        };
        // SAFETY: a listed run of this shard, under its lock. Field by
        // field, never `&mut Run`: another thread reads `shard` before it
        // takes the lock (see `release`).
        unsafe {
            let p = if !(*r).free.is_null() {
                let p = (*r).free;
                // A freed seed's first word links the free list.
                (*r).free = p.cast::<*mut u8>().read();
                p
            } else {
                let p: *mut u8 = with_exposed_provenance_mut((*r).next);
                (*r).next += SEED_SIZE;
                p
            };
            (*r).live += 1;
            if (*r).free.is_null() && (*r).next == (*r).end {
                s.unlink(r);
            }
            p
        }
    };
    asan::unpoison(p, ROOM_FROM);
    asan::poison(p.wrapping_add(ROOM_FROM), SEED_SIZE - ROOM_FROM);
    let seed = p.cast::<Seed>();
    // SAFETY: a seed-sized, aligned slot of a seed SuperSlab, unused.
    unsafe {
        seed.write(Seed {
            front: Front::new(true),
            inner: Mutex::new(SeedInner {
                full: null_mut(),
                limit,
                top: ROOM_FROM as u16,
                n: 0,
                log: [0; LOG],
            }),
        })
    };
    NonNull::new(seed)
}

/// Frees a seed to its run; the run's SuperSlab goes back to the warm
/// cache once all its seeds are back, unless its shard has no other room.
///
/// # Safety
/// The seed came from [`new_seed`], and neither it nor its blocks are
/// used again.
#[cold]
#[inline(never)]
pub(crate) unsafe fn release(seed: NonNull<Seed>) {
    // With the mapping's provenance: callers may name the seed by a
    // pointer made from a shared reference.
    let p: *mut u8 = with_exposed_provenance_mut(seed.as_ptr() as usize);
    let r: *mut Run =
        with_exposed_provenance_mut((p as usize & !(SUPERSLAB_SIZE - 1)) + STATE_OFFSET);
    // SAFETY: a live seed's SuperSlab keeps its run; the shard is fixed.
    let mut s = lock(&SEEDS[unsafe { (*r).shard }]);
    // SAFETY: per contract ours; the link overwrites the dropped lock; the
    // run is under its shard's lock.
    unsafe {
        core::ptr::drop_in_place(p.cast::<Seed>());
        p.cast::<*mut u8>().write((*r).free);
        asan::poison(p.wrapping_add(8), SEED_SIZE - 8);
        (*r).free = p;
        (*r).live -= 1;
        if !(*r).listed {
            s.link(r);
        }
        if (*r).live == 0 && !((*r).prev.is_null() && (*r).after.is_null()) {
            s.give_back(r);
        }
    }
}

/// Gives back every SuperSlab of seeds with none handed out (for
/// `trim_warm_cache`).
pub(crate) fn trim() {
    for shard in SEEDS.iter() {
        let mut s = lock(shard);
        let mut r = s.avail;
        while !r.is_null() {
            // SAFETY: listed runs are live, under the shard's lock.
            let (after, empty) = unsafe { ((*r).after, (*r).live == 0) };
            if empty {
                // SAFETY: as above.
                unsafe { s.give_back(r) };
            }
            r = after;
        }
    }
}
