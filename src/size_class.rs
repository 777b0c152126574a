//! Size classes: which slab block size serves a `Layout`.
//!
//! Classes step by a quarter of the power of two below them (8, 10, 12, 14,
//! 16, 20, 24, 28, 32, 40, ... 1024, 1280, ... 32768), so the internal waste
//! of any size is under 20%. A class's blocks are aligned to the largest
//! power of two dividing its size, at most 128 B up to 1 KiB
//! ([`CLASS_ALIGN`]); a layout whose alignment is larger moves up to the
//! first class that has it. Sizes above [`MAX_SMALL`] go to the large
//! path.
//!
//! Up to 1 KiB a size first goes up to a multiple of 8 (as in mimalloc), so
//! its class is 8-aligned and the 10, 12, 14, 20 and 28 B classes serve
//! nothing: a layout of alignment 8 or less then never takes the branch
//! for a class lacking its alignment. With sizes mixed at random that
//! branch mispredicted (`(8..=64, align 8)` churn: 14.2 -> 7.6 ns per free
//! and allocation, a mimalloc heap's 7.7; 256..=1024 B: 9.5 -> 8.5), and
//! the waste it costs is under 8 bytes.
//!
//! Invariant (checked exhaustively in the tests): for every `size` in
//! `1..=MAX_SMALL`, `CLASS_SIZE[index_for_size(size)] >= size` and the class
//! below is `< size`. Every size between a request and the returned block
//! length maps to the same class, so `deallocate` with any fitting layout
//! finds the right class.

use crate::slab::MIXED_MAX;

/// Number of slab size classes.
pub(crate) const NUM_CLASSES: usize = 49;
/// The largest size served from slabs.
pub(crate) const MAX_SMALL: usize = 32 << 10;

const fn compute_size(i: usize) -> usize {
    if i == 0 {
        8
    } else {
        let k = 3 + (i - 1) / 4;
        let sub = (i - 1) % 4;
        (1 << k) + (sub + 1) * (1 << (k - 2))
    }
}

/// Block size of each class.
pub(crate) const CLASS_SIZE: [u32; NUM_CLASSES] = {
    let mut t = [0u32; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        t[i] = compute_size(i) as u32;
        i += 1;
    }
    t
};

/// Alignment of each class: the lowest set bit of its size, at most
/// [`MIXED_ALIGN`] up to [`MIXED_MAX`] (mixed slabs carve those classes
/// one after another, and each block's alignment is padding before it:
/// a 1 KiB block at 1 KiB alignment skipped 508 B on average).
pub(crate) const CLASS_ALIGN: [u32; NUM_CLASSES] = {
    let mut t = [0u32; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        let s = CLASS_SIZE[i];
        let natural = s & s.wrapping_neg();
        t[i] = if (s as usize) <= MIXED_MAX && natural > MIXED_ALIGN {
            MIXED_ALIGN
        } else {
            natural
        };
        i += 1;
    }
    t
};

/// The most alignment a class up to [`MIXED_MAX`] guarantees: a cache line
/// pair, so `crossbeam`'s 128-byte `CachePadded` keeps its own class; a
/// small layout aligned to more moves up past 1 KiB.
const MIXED_ALIGN: u32 = 128;

/// Front-cache capacity per class: about 32 KiB of blocks, at least 4 and at
/// most 1,024 (8 KiB of the smallest class). A full cache flushes half of
/// it. Small blocks freed in bulk in a long-lived arena (2% of each round
/// surviving) come back to the cache, not through a flush: at most 256,
/// 10.9 -> 8.9 ns per allocation and free.
pub(crate) const CACHE_CAP: [u32; NUM_CLASSES] = {
    let mut t = [0u32; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        let n = (32 << 10) / CLASS_SIZE[i];
        t[i] = if n < 4 {
            4
        } else if n > 1024 {
            1024
        } else {
            n
        };
        i += 1;
    }
    t
};

const _: () = assert!(CLASS_SIZE[NUM_CLASSES - 1] as usize == MAX_SMALL);

/// The smallest class whose size is at least `size` (`size <= MAX_SMALL`).
/// Branch-light: a leading-zero count and two shifts.
#[inline(always)]
pub(crate) const fn index_for_size(size: usize) -> usize {
    if size <= 8 {
        return 0;
    }
    let s = size - 1;
    let k = (usize::BITS - 1 - s.leading_zeros()) as usize; // floor(log2(s)) >= 3
    1 + 4 * (k - 3) + ((s >> (k - 2)) & 3)
}

/// Up to this size, classes come from [`BY_8`].
const TABLE_MAX: usize = 1024;

/// `BY_8[w]`: the class of `8 * w` bytes (see the module docs). A load,
/// where computing the class takes a bit scan and shifts.
const BY_8: [u8; TABLE_MAX / 8 + 1] = {
    let mut t = [0u8; TABLE_MAX / 8 + 1];
    let mut w = 0;
    while w <= TABLE_MAX / 8 {
        t[w] = index_for_size(8 * w) as u8;
        w += 1;
    }
    t
};

/// The class serving `size` bytes at alignment `align`, or `None` when the
/// large path must serve it.
#[inline(always)]
pub(crate) fn class_for(size: usize, align: usize) -> Option<usize> {
    if size > MAX_SMALL {
        return None;
    }
    // One table load, no branch on whether the size's class is aligned
    // enough: with sizes mixed at random that branch mispredicted often
    // (8..=64 B at alignment 8: 14.4 -> 10.3 ns per free and allocation).
    // Both computed, one selected: sizes mixed around 1 KiB must not
    // mispredict either.
    let by_8 = BY_8[size.div_ceil(8).min(TABLE_MAX / 8)] as usize;
    let i = if size <= TABLE_MAX {
        by_8
    } else {
        index_for_size(size)
    };
    // Up to 1 KiB an alignment of 8 or less always passes, and past it a
    // Rust type's size is a multiple of its alignment: predicted.
    if align <= CLASS_ALIGN[i] as usize {
        Some(i)
    } else {
        aligned_class(i, align)
    }
}

/// Alignments (as shifts) a class may need: up to the largest class's.
const ALIGN_SHIFTS: usize = MAX_SMALL.trailing_zeros() as usize + 1;
const NO_CLASS: u8 = u8::MAX;

/// `ALIGNED[i][s]`: the first class from `i` on whose alignment is at least
/// `1 << s` (a table: the search it replaced cost 15% of a churn of
/// `Layout::from_size_align(8..=64, 8)` blocks).
const ALIGNED: [[u8; ALIGN_SHIFTS]; NUM_CLASSES] = {
    let mut t = [[NO_CLASS; ALIGN_SHIFTS]; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        let mut s = 0;
        while s < ALIGN_SHIFTS {
            let mut j = i;
            while j < NUM_CLASSES && (CLASS_ALIGN[j] as usize) < 1 << s {
                j += 1;
            }
            if j < NUM_CLASSES {
                t[i][s] = j as u8;
            }
            s += 1;
        }
        i += 1;
    }
    t
};

#[inline(always)]
fn aligned_class(from: usize, align: usize) -> Option<usize> {
    let j = *ALIGNED[from].get(align.trailing_zeros() as usize)?;
    (j != NO_CLASS).then_some(j as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aligned_class_table_matches_a_search() {
        for i in 0..NUM_CLASSES {
            for s in 0..24 {
                let align = 1usize << s;
                let want = (i..NUM_CLASSES).find(|&j| CLASS_ALIGN[j] as usize >= align);
                assert_eq!(aligned_class(i, align), want, "class {i} align {align}");
            }
        }
    }

    #[test]
    fn a_layout_gets_the_first_aligned_class_of_its_size_rounded_to_8() {
        let stride = if cfg!(miri) { 997 } else { 1 };
        for size in (1..=MAX_SMALL + 1).step_by(stride) {
            let rounded = if size <= TABLE_MAX {
                size.next_multiple_of(8)
            } else {
                size
            };
            for s in 0..20 {
                let align = 1usize << s;
                let want = if size > MAX_SMALL {
                    None
                } else {
                    (index_for_size(rounded)..NUM_CLASSES)
                        .find(|&j| CLASS_ALIGN[j] as usize >= align)
                };
                assert_eq!(class_for(size, align), want, "size {size} align {align}");
                if s <= 3 && size <= TABLE_MAX {
                    assert!(CLASS_ALIGN[want.unwrap()] >= 8, "size {size}");
                }
            }
        }
    }

    #[test]
    fn sizes_up_to_the_returned_length_map_to_the_same_class() {
        let stride = if cfg!(miri) { 997 } else { 1 };
        for size in (1..=MAX_SMALL).step_by(stride) {
            for s in 0..8 {
                let align = 1usize << s;
                let c = class_for(size, align).unwrap();
                for other in [
                    size,
                    (size + CLASS_SIZE[c] as usize) / 2,
                    CLASS_SIZE[c] as usize,
                ] {
                    assert_eq!(
                        class_for(other, align),
                        Some(c),
                        "size {size} vs {other} align {align}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_size_maps_to_the_tightest_class() {
        for size in 1..=MAX_SMALL {
            let i = index_for_size(size);
            assert!(CLASS_SIZE[i] as usize >= size, "size {size} class {i}");
            if i > 0 {
                assert!((CLASS_SIZE[i - 1] as usize) < size, "size {size} not tight");
            }
        }
    }

    #[test]
    fn waste_is_under_a_fifth_above_the_minimum_block() {
        for size in 8..=MAX_SMALL {
            let c = CLASS_SIZE[index_for_size(size)] as usize;
            assert!((c - size) * 5 < c, "size {size} wastes {} of {c}", c - size);
        }
    }

    #[test]
    fn classes_are_increasing_and_aligned() {
        for i in 1..NUM_CLASSES {
            assert!(CLASS_SIZE[i] > CLASS_SIZE[i - 1]);
            assert_eq!(CLASS_SIZE[i] % CLASS_ALIGN[i], 0);
            assert!(CLASS_ALIGN[i].is_power_of_two());
        }
        assert_eq!(&CLASS_SIZE[..6], &[8, 10, 12, 14, 16, 20]);
        assert!(CLASS_SIZE.contains(&256) && CLASS_SIZE.contains(&1024));
    }

    #[test]
    fn alignment_moves_up_to_an_aligned_class() {
        for align_shift in 0..=16 {
            let align = 1usize << align_shift;
            for size in [1, 9, 100, 255, 256, 1000, 5000, MAX_SMALL] {
                match class_for(size, align) {
                    Some(c) => {
                        assert!(CLASS_SIZE[c] as usize >= size);
                        assert!(CLASS_ALIGN[c] as usize >= align);
                    }
                    None => assert!(align > MAX_SMALL),
                }
            }
        }
        assert_eq!(class_for(MAX_SMALL + 1, 1), None);
    }
}
