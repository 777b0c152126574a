//! mimalloc as allocator-api2 `Allocator`s, shared by the examples: the
//! process-wide `mi_malloc` and a first-class heap. A heap belongs to the
//! thread that made it: allocate from it there only; any thread may free its
//! blocks (`mi_free`).

// Each example uses what it needs of this module.
#![allow(dead_code)]

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

/// A block from mimalloc as the trait returns it.
fn block(p: *mut core::ffi::c_void, size: usize) -> Result<NonNull<[u8]>, AllocError> {
    NonNull::new(p.cast::<u8>())
        .map(|p| NonNull::slice_from_raw_parts(p, size))
        .ok_or(AllocError)
}

/// mimalloc's process-wide `mi_malloc`/`mi_free`, called directly.
#[derive(Clone, Copy)]
pub struct MiGlobal;
// SAFETY: mimalloc returns blocks of at least the size, aligned as asked,
// valid until `mi_free`.
unsafe impl Allocator for MiGlobal {
    fn allocate(&self, l: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: plain FFI call.
        block(
            unsafe { libmimalloc_sys::mi_malloc_aligned(l.size(), l.align()) },
            l.size(),
        )
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, _: Layout) {
        // SAFETY: `p` came from mimalloc.
        unsafe { libmimalloc_sys::mi_free(p.as_ptr().cast()) }
    }
    unsafe fn grow(
        &self,
        p: NonNull<u8>,
        _: Layout,
        l: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `p` came from mimalloc.
        block(
            unsafe { libmimalloc_sys::mi_realloc_aligned(p.as_ptr().cast(), l.size(), l.align()) },
            l.size(),
        )
    }
}

/// A first-class mimalloc heap; `mi_heap_destroy` releases it at once.
pub struct MiHeap(*mut libmimalloc_sys::mi_heap_t);
// SAFETY: the benchmark allocates from a heap only on the thread that made
// it; other threads only call `mi_free`, which mimalloc allows.
unsafe impl Sync for MiHeap {}
// SAFETY: as above.
unsafe impl Allocator for MiHeap {
    fn allocate(&self, l: Layout) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: plain FFI call on a live heap.
        block(
            unsafe { libmimalloc_sys::mi_heap_malloc_aligned(self.0, l.size(), l.align()) },
            l.size(),
        )
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, _: Layout) {
        // SAFETY: `p` came from mimalloc.
        unsafe { libmimalloc_sys::mi_free(p.as_ptr().cast()) }
    }
    unsafe fn grow(
        &self,
        p: NonNull<u8>,
        _: Layout,
        l: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `p` came from this heap.
        let q = unsafe {
            libmimalloc_sys::mi_heap_realloc_aligned(self.0, p.as_ptr().cast(), l.size(), l.align())
        };
        block(q, l.size())
    }
}
impl Drop for MiHeap {
    fn drop(&mut self) {
        // SAFETY: the heap is live and dropped once.
        unsafe { libmimalloc_sys::mi_heap_destroy(self.0) }
    }
}
impl MiHeap {
    /// A new heap, bound to the calling thread.
    pub fn new() -> Self {
        // SAFETY: plain FFI call.
        MiHeap(unsafe { libmimalloc_sys::mi_heap_new() })
    }
}
