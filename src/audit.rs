//! A whole-arena consistency check, for tests and debugging.
//!
//! [`SmallMidArena::audit`] takes every lock of the arena (class locks in
//! order, then the pool's, as everywhere) and checks every structure's
//! invariant against the others; it panics with a message naming the first
//! one broken.

use crate::arena::SmallMidArena;
use crate::central::ClassList;
use crate::size_class::{class_for, NUM_CLASSES};
use crate::slab::{Slab, Use};
use crate::superslab::{SuperSlab, SLABS};
use crate::sync::lock;

/// What [`SmallMidArena::audit`] counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Audit {
    /// Slabs per size class.
    per_class: [u32; NUM_CLASSES],
    /// Slab blocks out of their slabs, with users or in front caches
    /// (blocks of mixed slabs counted once no cache holds their range:
    /// call `flush_thread_cache` first).
    pub blocks_out: usize,
    /// Slabs serving a size class.
    pub class_slabs: usize,
    /// Mixed slabs (blocks of many classes, see `crate::slab`).
    pub mixed_slabs: usize,
    /// Slabs in large spans.
    pub span_slabs: usize,
    /// Free slabs in the pool.
    pub free_slabs: usize,
    /// SuperSlabs held.
    pub superslabs: usize,
    /// Of them, SuperSlabs with transparent huge pages asked for.
    pub huge_paged: usize,
    /// Blocks of the arena's seed, not freed while it was one (a seed block
    /// freed after the arena grew is counted by the freeing cache, not here).
    pub seed_blocks: usize,
}

impl Audit {
    /// Slabs serving the size class of `layout` (0 if no class serves it).
    pub fn slabs_for(&self, layout: core::alloc::Layout) -> usize {
        class_for(layout.size(), layout.align()).map_or(0, |c| self.per_class[c] as usize)
    }
}

impl SmallMidArena {
    /// Checks every invariant of the arena and counts what it holds.
    ///
    /// # Panics
    /// If an invariant is broken (a bug or a misuse that corrupted memory).
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let small = arena.alloc(1u64); // the arena's seed serves it
    /// let au = arena.audit();
    /// // (Under the `checked` feature an arena starts grown, with no seed.)
    /// assert_eq!(au.seed_blocks, usize::from(au.superslabs == 0));
    /// let b = arena.alloc([0u8; 300]); // too big for the seed: the arena grows
    /// arena.flush_thread_cache(); // counts blocks carved from mixed slabs
    /// assert!(arena.audit().blocks_out >= 1);
    /// drop(small);
    /// drop(b);
    /// arena.flush_thread_cache();
    /// assert_eq!(arena.audit().blocks_out, 0);
    /// ```
    #[doc(hidden)]
    pub fn audit(&self) -> Audit {
        let mut seed_blocks = 0;
        if let Some(seed) = self.seed() {
            seed.for_each_block(|_, freed| seed_blocks += usize::from(!freed));
        }
        let mut a = Audit {
            per_class: [0; NUM_CLASSES],
            blocks_out: 0,
            class_slabs: 0,
            mixed_slabs: 0,
            span_slabs: 0,
            free_slabs: 0,
            superslabs: 0,
            huge_paged: 0,
            seed_blocks,
        };
        let Some(st) = self.full() else {
            return a;
        };
        let members = st.members.lock();
        let lists: Vec<_> = st.heap.classes.iter().map(lock).collect();
        let pool = lock(&st.heap.pool);
        a.superslabs = pool.superslabs;
        let mut on_lists = vec![0usize; lists.len()];
        for ss in pool.all_superslabs() {
            let ss = ss.as_ptr() as *const SuperSlab;
            // SAFETY: pool lock held; the header is live.
            let mask = unsafe { SuperSlab::links(ss, |l| l.free_mask) };
            // SAFETY: as above.
            let owner = unsafe { (*ss).owner };
            // SAFETY: pool lock held; the header is live.
            a.huge_paged += usize::from(unsafe { SuperSlab::links(ss, |l| l.huge_paged) });
            assert!(
                core::ptr::eq(owner, &st.heap),
                "SuperSlab owned by another arena"
            );
            for idx in 0..SLABS {
                let free_bit = mask & (1 << idx) != 0;
                // SAFETY: the header is live.
                let slab = unsafe { &(*ss).slabs[idx] };
                // SAFETY: every lock of the arena is held.
                unsafe {
                    slab.with(|s| match s.use_ {
                        Use::Free => a.free_slabs += 1,
                        Use::Class(c) => {
                            assert!(!free_bit, "class slab marked free in the pool");
                            s.check();
                            check_free_list(s);
                            a.class_slabs += 1;
                            a.per_class[c as usize] += 1;
                            a.blocks_out += s.used as usize;
                            assert_eq!(
                                s.in_partial,
                                s.available(),
                                "a class slab is listed iff it has blocks"
                            );
                            if s.in_partial {
                                on_lists[c as usize] += 1;
                            }
                        }
                        Use::Mixed => {
                            assert!(!free_bit, "mixed slab marked free in the pool");
                            // Its count may be 0 already: the thread that
                            // emptied it waits for the pool lock to free it.
                            a.mixed_slabs += 1;
                            a.blocks_out += slab.mixed_blocks() as usize;
                        }
                        Use::SpanHead(_) | Use::SpanTail => {
                            assert!(!free_bit, "span slab marked free in the pool");
                            a.span_slabs += 1;
                        }
                    })
                };
            }
        }
        assert_eq!(
            a.mixed_slabs,
            pool.mixed_slabs().len(),
            "the pool's mixed slabs disagree with the slabs"
        );
        let mut attached = 0;
        st.for_each_cache(&members, |_, _| attached += 1);
        assert_eq!(
            attached, members.caches,
            "cache count disagrees with the slots"
        );
        for (class, list) in lists.iter().enumerate() {
            let mut n = 0;
            list.for_each(|slab: *const Slab| {
                // SAFETY: all locks held; list members are live slabs.
                unsafe {
                    (*slab).with(|s| {
                        assert_eq!(
                            s.use_,
                            Use::Class(class as u8),
                            "slab on the wrong class list"
                        );
                        assert!(
                            s.available() && s.in_partial,
                            "listed slab has nothing available"
                        );
                    })
                };
                n += 1;
            });
            assert_eq!(
                n, on_lists[class],
                "class {class}: list length disagrees with the slabs"
            );
        }
        a
    }
}

impl ClassList {
    /// Visits every slab on the list (class lock held by the caller).
    pub(crate) fn for_each(&self, mut f: impl FnMut(*const Slab)) {
        let mut p = self.head();
        let mut guard = 0usize;
        while !p.is_null() {
            f(p);
            // SAFETY: list members are live; the caller holds the lock.
            p = unsafe { (*p).with(|s| s.next) };
            guard += 1;
            assert!(guard < 1 << 24, "class list does not end: corrupted");
        }
    }
}

/// Walks a class slab's free list: exactly `free_count` blocks, each a
/// carved block of the slab (between its first block and the bump
/// pointer, on a block boundary), then null.
///
/// # Safety
/// The slab's class lock is held (its list is stable), and blocks on the
/// list are free: their first word is the link.
unsafe fn check_free_list(s: &crate::slab::SlabState) {
    let size = s.size as usize;
    let first = s.end as usize - s.capacity as usize * size;
    let mut b = s.free;
    for k in 0..s.free_count {
        let a = b as usize;
        assert!(
            !b.is_null() && a >= first && a < s.bump as usize && (a - first) % size == 0,
            "free list entry {k} of {}: {b:p} is not a carved block of the slab",
            s.free_count
        );
        // SAFETY: a free block of this slab (checked just above): its first
        // word is the link, stable under the class lock (contract).
        b = unsafe { crate::slab::next_of(b) };
    }
    assert!(
        b.is_null(),
        "free list longer than free_count {}",
        s.free_count
    );
}
