//! Misuse detection, with the `checked` feature.
//!
//! Each arena records every live block it handed out (address, layout,
//! length). A free is checked against the record before the engine sees it,
//! so a double free, a pointer this arena never handed out (from another
//! arena or the global allocator), or a layout that does not fit the block
//! panics with a message naming the problem, before any corruption. It
//! costs a lock and a hash-map update per operation: a debugging aid, off
//! by default (see the README for the measured cost). Without the feature
//! every method is an empty inline function.

#[cfg(feature = "checked")]
mod imp {
    use crate::sync::{lock, Mutex};
    use core::alloc::Layout;
    use core::ptr::NonNull;
    use std::collections::HashMap;

    /// Live blocks: address -> (layout requested, length returned).
    #[derive(Debug, Default)]
    pub(crate) struct Checked {
        live: Mutex<HashMap<usize, (Layout, usize)>>,
    }

    /// A live block's record, taken out (see [`Checked::take`]).
    pub(crate) type Record = Option<(Layout, usize)>;

    impl Checked {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn allocated(&self, block: NonNull<[u8]>, layout: Layout) {
            if layout.size() == 0 {
                return;
            }
            let addr = block.cast::<u8>().as_ptr() as usize;
            let old = lock(&self.live).insert(addr, (layout, block.len()));
            assert!(
                old.is_none(),
                "smallmid(checked): block {addr:#x} handed out twice: arena corrupted"
            );
        }

        /// Checks, then forgets, a block being freed.
        pub(crate) fn freed(&self, ptr: NonNull<u8>, layout: Layout) {
            if let Some(mut live) = self.check(ptr, layout) {
                live.remove(&(ptr.as_ptr() as usize));
            }
        }

        /// As [`Self::freed`], returning the record for [`Self::restore`]:
        /// for a block whose address may be reused by the system before the
        /// caller knows whether it moved (a huge block `mremap`ped).
        pub(crate) fn take(&self, ptr: NonNull<u8>, layout: Layout) -> Record {
            let mut live = self.check(ptr, layout)?;
            live.remove(&(ptr.as_ptr() as usize))
        }

        /// Puts back a record [`Self::take`] removed (the block did not move).
        pub(crate) fn restore(&self, ptr: NonNull<u8>, record: Record) {
            if let Some(r) = record {
                lock(&self.live).insert(ptr.as_ptr() as usize, r);
            }
        }

        /// Checks a block about to be resized (before anything changes).
        pub(crate) fn verify(&self, ptr: NonNull<u8>, layout: Layout) {
            self.check(ptr, layout);
        }

        /// Panics unless `ptr` is live with a layout `layout` fits; the
        /// record, locked, for a non-empty layout.
        fn check(
            &self,
            ptr: NonNull<u8>,
            layout: Layout,
        ) -> Option<crate::sync::MutexGuard<'_, HashMap<usize, (Layout, usize)>>> {
            if layout.size() == 0 {
                return None;
            }
            let addr = ptr.as_ptr() as usize;
            let live = lock(&self.live);
            let Some(&(given, len)) = live.get(&addr) else {
                drop(live);
                panic!(
                    "smallmid(checked): freeing {addr:#x} ({layout:?}), which this arena did not hand out \
                     or already took back: a double free, or a pointer from another arena or allocator"
                );
            };
            if layout.align() != given.align()
                || layout.size() < given.size()
                || layout.size() > len
            {
                drop(live);
                panic!(
                    "smallmid(checked): freeing {addr:#x} with {layout:?}, but it was allocated with {given:?} \
                     ({len} bytes): the layout must have the same alignment and a size between the two"
                );
            }
            Some(live)
        }

        pub(crate) fn clear(&self) {
            lock(&self.live).clear();
        }
    }
}

#[cfg(not(feature = "checked"))]
mod imp {
    use core::alloc::Layout;
    use core::ptr::NonNull;

    #[derive(Debug)]
    pub(crate) struct Checked;

    /// Nothing to take out without the feature.
    #[derive(Debug)]
    pub(crate) struct Record;

    impl Checked {
        pub(crate) fn new() -> Self {
            Checked
        }
        #[inline(always)]
        pub(crate) fn allocated(&self, _: NonNull<[u8]>, _: Layout) {}
        #[inline(always)]
        pub(crate) fn freed(&self, _: NonNull<u8>, _: Layout) {}
        #[inline(always)]
        pub(crate) fn take(&self, _: NonNull<u8>, _: Layout) -> Record {
            Record
        }
        #[inline(always)]
        pub(crate) fn restore(&self, _: NonNull<u8>, _: Record) {}
        #[inline(always)]
        pub(crate) fn verify(&self, _: NonNull<u8>, _: Layout) {}
        #[inline(always)]
        pub(crate) fn clear(&self) {}
    }
}

pub(crate) use imp::Checked;
