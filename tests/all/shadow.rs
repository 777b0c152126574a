//! A shadow allocator: tracks every live block's byte range and contents,
//! and panics on overlap, misalignment, or a block whose bytes changed.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct Live {
    pub ptr: NonNull<u8>,
    pub layout: Layout,
    /// Byte the block was filled with.
    pub fill: u8,
}

/// Live blocks keyed by start address.
#[derive(Debug, Default)]
pub struct Shadow {
    blocks: BTreeMap<usize, Live>,
}

impl Shadow {
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Records a new block (of at least `layout.size()` bytes), checking
    /// alignment and overlap, and fills it with `fill`.
    pub fn insert(&mut self, block: NonNull<[u8]>, layout: Layout, fill: u8) -> NonNull<u8> {
        let ptr = block.cast::<u8>();
        assert!(
            block.len() >= layout.size(),
            "block shorter than its layout"
        );
        let start = ptr.as_ptr() as usize;
        assert_eq!(start % layout.align(), 0, "misaligned block for {layout:?}");
        if layout.size() > 0 {
            self.check_free(start, start + layout.size());
            // SAFETY: the block is live and at least `size` long.
            unsafe { ptr.as_ptr().write_bytes(fill, layout.size()) };
        }
        let old = self.blocks.insert(start, Live { ptr, layout, fill });
        assert!(
            old.is_none() || layout.size() == 0 || old.unwrap().layout.size() == 0,
            "block handed out twice"
        );
        ptr
    }

    fn check_free(&self, start: usize, end: usize) {
        if let Some((&s, b)) = self.blocks.range(..end).next_back() {
            if b.layout.size() > 0 {
                assert!(
                    s + b.layout.size() <= start || s >= end,
                    "overlap: [{start:#x},{end:#x}) with [{s:#x},+{})",
                    b.layout.size()
                );
            }
        }
    }

    /// Verifies a block's contents still equal its fill.
    pub fn verify(&self, live: &Live) {
        // SAFETY: live blocks are readable for their size.
        let bytes = unsafe { core::slice::from_raw_parts(live.ptr.as_ptr(), live.layout.size()) };
        // Miri interprets each byte compared: check both ends there.
        let n = bytes.len();
        let ranges = if cfg!(miri) && n > 256 {
            [0..128, n - 128..n]
        } else {
            [0..n, n..n]
        };
        if let Some(i) = ranges
            .into_iter()
            .flatten()
            .find(|&i: &usize| bytes[i] != live.fill)
        {
            panic!("block {:p} ({:?}) byte {i} changed", live.ptr, live.layout);
        }
    }

    /// Removes the block at `index` (in address order) for freeing.
    pub fn take_nth(&mut self, n: usize) -> Option<Live> {
        let key = *self.blocks.keys().nth(n)?;
        let live = self.blocks.remove(&key)?;
        self.verify(&live);
        Some(live)
    }

    /// Frees every block into `a`.
    pub fn free_all<A: Allocator>(&mut self, a: &A) {
        while let Some(live) = self.take_nth(0) {
            // SAFETY: recorded from `a` with this layout.
            unsafe { a.deallocate(live.ptr, live.layout) };
        }
    }

    /// Live blocks whose layout satisfies `f`.
    pub fn count(&self, f: impl Fn(&Layout) -> bool) -> usize {
        self.blocks.values().filter(|b| f(&b.layout)).count()
    }

    /// Start addresses of the live blocks, in order.
    pub fn addresses(&self) -> Vec<usize> {
        self.blocks.keys().copied().collect()
    }

    pub fn verify_all(&self) {
        self.blocks.values().for_each(|b| self.verify(b));
    }
}
