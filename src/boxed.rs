//! `ArenaBox`: an owning, pointer-sized handle to one value in an arena.

use crate::arena::{ArenaState, Seed, SmallMidArena};
use crate::large::{self, huge_header, Kind};
use crate::size_class::class_for;
use crate::superslab::SuperSlab;
use allocator_api2::alloc::AllocError;
use core::alloc::Layout;
use core::borrow::{Borrow, BorrowMut};
use core::cmp::Ordering;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::mem::{self, ManuallyDrop};
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use core::ptr::{self, NonNull};

/// An owning handle to a `T` stored in a [`SmallMidArena`], like `Box<T>`.
///
/// It is one pointer wide for sized `T` (two for slices, `str` and trait
/// objects, like `Box`), because the arena is not stored: it is found from
/// the block's address when the handle is dropped (see
/// [`SmallMidArena::alloc`]). Dropping it drops the value and frees its
/// block, on any thread. It cannot outlive its arena:
///
/// ```compile_fail
/// let b = {
///     let arena = smallmid::SmallMidArena::new();
///     arena.alloc(5u32) // error: `arena` does not live long enough
/// };
/// ```
///
/// and it is `Send`/`Sync` exactly when `T` is:
///
/// ```compile_fail
/// let arena = smallmid::SmallMidArena::new();
/// let b = arena.alloc(std::rc::Rc::new(1));
/// std::thread::scope(|s| {
///     s.spawn(move || drop(b)); // error: `Rc<i32>` cannot be sent between threads
/// });
/// ```
///
/// # Example
/// ```
/// use smallmid::{ArenaBox, SmallMidArena};
/// let arena = SmallMidArena::new();
/// let mut b: ArenaBox<'_, Vec<u32>> = arena.alloc(vec![1, 2]);
/// b.push(3);
/// assert_eq!(*b, [1, 2, 3]);
/// assert_eq!(std::mem::size_of::<ArenaBox<'_, u64>>(), std::mem::size_of::<usize>());
/// ```
pub struct ArenaBox<'a, T: ?Sized> {
    /// Points to a live, initialized `T` in a block of the arena `'a` (or a
    /// dangling, aligned pointer when `T` occupies no bytes).
    ptr: NonNull<T>,
    _owns: PhantomData<(&'a SmallMidArena, T)>,
}

// SAFETY: the handle owns its `T`; freeing the block is allowed from any
// thread (the arena is `Sync`).
unsafe impl<T: ?Sized + Send> Send for ArenaBox<'_, T> {}
// SAFETY: shared access to the handle only gives `&T`.
unsafe impl<T: ?Sized + Sync> Sync for ArenaBox<'_, T> {}

impl ArenaState {
    /// The arena that owns a block, found from the block alone: by masking
    /// its address (slab and span blocks: the SuperSlab header names the
    /// arena) or from the header just below it (huge blocks).
    ///
    /// # Safety
    /// `ptr` is a live block allocated from some arena with `layout`
    /// (`layout.size() > 0`).
    #[inline(always)]
    pub(crate) unsafe fn owner_of<'a>(ptr: NonNull<u8>, layout: Layout) -> &'a ArenaState {
        let addr = ptr.as_ptr() as usize;
        let huge = class_for(layout.size(), layout.align()).is_none()
            && large::kind(layout.size(), layout.align()) == Kind::Huge;
        // SAFETY: per contract the block and so its header are live; the
        // arena outlives its blocks; the header names its heap.
        unsafe {
            ArenaState::of_heap(if huge {
                (*huge_header(ptr.as_ptr())).owner
            } else {
                (*SuperSlab::of(addr)).owner
            })
        }
    }
}

/// Allocates `layout` in the arena of block `ptr`.
///
/// # Safety
/// `ptr` is a live block allocated from some arena with `layout`
/// (`layout.size() > 0`).
unsafe fn allocate_beside(ptr: NonNull<u8>, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    if class_for(layout.size(), layout.align()).is_some() {
        // SAFETY: a small block lies in a live SuperSlab.
        if unsafe { SuperSlab::is_seeds(SuperSlab::of(ptr.as_ptr() as usize)) } {
            // SAFETY: per contract a live block of a seed.
            return unsafe { Seed::of(ptr.as_ptr()) }.allocate(layout).0;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { ArenaState::owner_of(ptr, layout) }.allocate(layout)
}

/// Frees `ptr`'s block to its arena, if `layout` takes any memory.
///
/// # Safety
/// As for [`ArenaState::owner_of`] (any size); the block is not used again.
#[inline(always)]
unsafe fn free_block(ptr: NonNull<u8>, layout: Layout) {
    if layout.size() == 0 {
        return;
    }
    if let Some(class) = class_for(layout.size(), layout.align()) {
        // SAFETY: a small block lies in a live SuperSlab: its arena's or
        // one of seeds.
        if unsafe { SuperSlab::is_seeds(SuperSlab::of(ptr.as_ptr() as usize)) } {
            // SAFETY: per contract a live block of a seed, so the seed is live.
            let seed = unsafe { Seed::of(ptr.as_ptr()) };
            if let Some(st) = seed.free(ptr.as_ptr(), class) {
                // SAFETY: forwarded contract: the grown arena's block.
                unsafe { st.deallocate(ptr, layout) }
            }
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { ArenaState::owner_of(ptr, layout).deallocate(ptr, layout) }
}

/// Frees a block if dropped: owns memory during construction, so a panic
/// (in a closure or a `clone`) frees what was allocated and drops what was
/// constructed.
pub(crate) struct Building<T> {
    pub(crate) ptr: NonNull<T>,
    pub(crate) layout: Layout,
    /// Elements initialized so far.
    pub(crate) done: usize,
}

impl<T> Drop for Building<T> {
    fn drop(&mut self) {
        // SAFETY: the first `done` elements are initialized and owned here;
        // the block came from an arena with `layout`.
        unsafe {
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.done));
            free_block(self.ptr.cast(), self.layout);
        }
    }
}

impl SmallMidArena {
    pub(crate) fn block<T>(&self, layout: Layout) -> Result<NonNull<T>, AllocError> {
        Ok(allocator_api2::alloc::Allocator::allocate(self, layout)?.cast())
    }

    /// Moves `value` into the arena.
    ///
    /// The handle finds its arena again from the block's address: slab and
    /// span blocks by masking to their SuperSlab's header, huge blocks
    /// (over 960 KiB) from a header just below the block.
    ///
    /// # Panics
    /// If the arena cannot get memory; see [`Self::try_alloc`].
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let b = arena.alloc(String::from("hi"));
    /// assert_eq!(b.len(), 2);
    /// ```
    pub fn alloc<T>(&self, value: T) -> ArenaBox<'_, T> {
        self.try_alloc(value)
            .unwrap_or_else(|_| oom(Layout::new::<T>()))
    }

    /// Moves `value` into the arena, or returns `AllocError` (dropping
    /// `value`) when no memory can be had.
    ///
    /// # Errors
    /// `AllocError` when the arena's memory limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(1 << 20).build();
    /// let mut kept = Vec::new();
    /// while let Ok(b) = arena.try_alloc([7u8; 1000]) {
    ///     kept.push(b); // until the 1 MiB limit is reached: then an error
    /// }
    /// assert!(kept.len() > 900);
    /// kept.clear(); // freeing makes room again
    /// assert_eq!(*arena.try_alloc(7).unwrap(), 7);
    /// ```
    pub fn try_alloc<T>(&self, value: T) -> Result<ArenaBox<'_, T>, AllocError> {
        self.try_alloc_with(|| value)
    }

    /// Allocates, then calls `f` to produce the value in place (for large
    /// values: no copy through the stack once `f` is inlined).
    ///
    /// If `f` panics, the block is freed and the panic goes on.
    ///
    /// # Panics
    /// If `f` panics or the arena cannot get memory.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let big = arena.alloc_with(|| [7u8; 100_000]);
    /// assert!(big.iter().all(|&x| x == 7));
    /// ```
    pub fn alloc_with<T>(&self, f: impl FnOnce() -> T) -> ArenaBox<'_, T> {
        self.try_alloc_with(f)
            .unwrap_or_else(|_| oom(Layout::new::<T>()))
    }

    /// [`Self::alloc_with`] returning `AllocError` instead of panicking when
    /// no memory can be had (`f` is then not called).
    ///
    /// # Errors
    /// `AllocError` when the arena's memory limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(1 << 20).build();
    /// assert!(arena.try_alloc_with(|| [1u8; 4 << 20]).is_err()); // `f` not called
    /// let table = arena.try_alloc_with(|| [1u8; 4096])?;
    /// assert_eq!(table.len(), 4096);
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_alloc_with<T>(&self, f: impl FnOnce() -> T) -> Result<ArenaBox<'_, T>, AllocError> {
        let layout = Layout::new::<T>();
        let guard = Building::<T> {
            ptr: self.block(layout)?,
            layout,
            done: 0,
        };
        // SAFETY: the block fits a `T`; if `f` panics the guard frees it.
        unsafe { guard.ptr.as_ptr().write(f()) };
        let guard = ManuallyDrop::new(guard);
        // SAFETY: initialized above; ownership moves to the handle.
        Ok(unsafe { ArenaBox::from_non_null(guard.ptr) })
    }

    /// Moves `value` into the arena and pins it there.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let p = arena.alloc_pin(5u8);
    /// assert_eq!(*p, 5);
    /// ```
    pub fn alloc_pin<T>(&self, value: T) -> Pin<ArenaBox<'_, T>> {
        ArenaBox::into_pin(self.alloc(value))
    }

    /// Builds a slice of `len` elements, element `i` being `f(i)`.
    ///
    /// If `f` panics, the elements made so far are dropped and the block is
    /// freed.
    ///
    /// # Panics
    /// If `f` panics, the size overflows, or no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let squares = arena.alloc_slice_fill_with(5, |i| i * i);
    /// assert_eq!(&*squares, &[0, 1, 4, 9, 16]);
    /// ```
    pub fn alloc_slice_fill_with<T>(
        &self,
        len: usize,
        f: impl FnMut(usize) -> T,
    ) -> ArenaBox<'_, [T]> {
        self.try_alloc_slice_fill_with(len, f)
            .unwrap_or_else(|_| oom(Layout::new::<T>()))
    }

    /// [`Self::alloc_slice_fill_with`] returning `AllocError` instead of
    /// panicking when the size overflows or no memory can be had (`f` is
    /// then not called).
    ///
    /// # Errors
    /// `AllocError` when `len` elements overflow `isize` or the arena's
    /// memory limit or the OS refuses.
    ///
    /// # Panics
    /// If `f` panics (what was made is dropped, the block freed).
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert!(arena.try_alloc_slice_fill_with(usize::MAX, |i| i).is_err());
    /// assert_eq!(&*arena.try_alloc_slice_fill_with(3, |i| i)?, &[0, 1, 2]);
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_alloc_slice_fill_with<T>(
        &self,
        len: usize,
        mut f: impl FnMut(usize) -> T,
    ) -> Result<ArenaBox<'_, [T]>, AllocError> {
        let layout = Layout::array::<T>(len).map_err(|_| AllocError)?;
        let ptr = self.block::<T>(layout)?;
        let mut guard = Building {
            ptr,
            layout,
            done: 0,
        };
        while guard.done < len {
            // SAFETY: in bounds of the block; the guard drops what is done.
            unsafe { guard.ptr.as_ptr().add(guard.done).write(f(guard.done)) };
            guard.done += 1;
        }
        let guard = ManuallyDrop::new(guard);
        let slice = NonNull::slice_from_raw_parts(guard.ptr, len);
        // SAFETY: all `len` elements are initialized; ownership moves.
        Ok(unsafe { ArenaBox::from_non_null(slice) })
    }

    /// Copies a slice into the arena.
    ///
    /// # Panics
    /// If no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let s = arena.alloc_slice_copy(&[1u16, 2, 3]);
    /// assert_eq!(&*s, &[1, 2, 3]);
    /// ```
    pub fn alloc_slice_copy<T: Copy>(&self, src: &[T]) -> ArenaBox<'_, [T]> {
        self.alloc_slice_fill_with(src.len(), |i| src[i])
    }

    /// Clones a slice into the arena. If a `clone` panics, the clones made
    /// so far are dropped and the block is freed.
    ///
    /// # Panics
    /// If a `clone` panics or no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let s = arena.alloc_slice_clone(&[String::from("a"), String::from("b")]);
    /// assert_eq!(s.concat(), "ab");
    /// ```
    pub fn alloc_slice_clone<T: Clone>(&self, src: &[T]) -> ArenaBox<'_, [T]> {
        self.alloc_slice_fill_with(src.len(), |i| src[i].clone())
    }

    /// Copies a string into the arena.
    ///
    /// # Panics
    /// If no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let s = arena.alloc_str("hello");
    /// assert_eq!(&*s, "hello");
    /// ```
    pub fn alloc_str(&self, src: &str) -> ArenaBox<'_, str> {
        let bytes = ArenaBox::into_raw(self.alloc_slice_copy(src.as_bytes()));
        // SAFETY: a UTF-8 copy of `src`, owned, now typed as `str`.
        unsafe { ArenaBox::from_raw(bytes as *mut str) }
    }
}

#[cold]
pub(crate) fn oom(layout: Layout) -> ! {
    panic!(
        "smallmid: out of memory allocating {} bytes (align {})",
        layout.size(),
        layout.align()
    )
}

impl<'a, T: ?Sized> ArenaBox<'a, T> {
    /// # Safety
    /// `ptr` points to an initialized `T` in a block allocated from an arena
    /// living for `'a`, with `Layout::for_value(&*ptr)`, owned by nobody else.
    pub(crate) unsafe fn from_non_null(ptr: NonNull<T>) -> Self {
        ArenaBox {
            ptr,
            _owns: PhantomData,
        }
    }

    /// Gives up the handle, returning the pointer; the value is neither
    /// dropped nor freed (see [`Self::from_raw`]).
    ///
    /// # Example
    /// ```
    /// use smallmid::{ArenaBox, SmallMidArena};
    /// let arena = SmallMidArena::new();
    /// let p = ArenaBox::into_raw(arena.alloc(3u8));
    /// // SAFETY: from `into_raw` of a handle of this arena, used once.
    /// let b = unsafe { ArenaBox::from_raw(p) };
    /// assert_eq!(*b, 3);
    /// ```
    pub fn into_raw(b: Self) -> *mut T {
        ManuallyDrop::new(b).ptr.as_ptr()
    }

    /// Rebuilds a handle from [`Self::into_raw`].
    ///
    /// # Safety
    /// `ptr` came from `into_raw` of a handle of an arena that lives for
    /// `'a` (a `*mut [T]` or `*mut str` cast keeping the same bytes is
    /// fine, and so is an unsizing cast such as to `*mut dyn Trait`), and
    /// no other handle to it exists.
    ///
    /// # Example
    /// ```
    /// use smallmid::{ArenaBox, SmallMidArena};
    /// let arena = SmallMidArena::new();
    /// let p = ArenaBox::into_raw(arena.alloc_slice_copy(&[1u8, 2, 3]));
    /// // SAFETY: from `into_raw` of a handle of `arena`, rebuilt once.
    /// let b: ArenaBox<'_, [u8]> = unsafe { ArenaBox::from_raw(p) };
    /// assert_eq!(&*b, &[1, 2, 3]);
    /// ```
    pub unsafe fn from_raw(ptr: *mut T) -> Self {
        // SAFETY: `into_raw` pointers are non-null; ownership per contract.
        unsafe { Self::from_non_null(NonNull::new_unchecked(ptr)) }
    }

    /// Leaks the value: it stays in the arena, never dropped, until the
    /// arena itself is dropped.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let r: &mut u32 = smallmid::ArenaBox::leak(arena.alloc(1));
    /// *r += 1;
    /// assert_eq!(*r, 2);
    /// ```
    pub fn leak(b: Self) -> &'a mut T {
        // SAFETY: the value lives in the arena, which lives for `'a`.
        unsafe { &mut *Self::into_raw(b) }
    }

    /// Pins the value where it is (it never moves in the arena).
    ///
    /// # Example
    /// ```
    /// use smallmid::{ArenaBox, SmallMidArena};
    /// let arena = SmallMidArena::new();
    /// let fut = ArenaBox::into_pin(arena.alloc(async { 7 }));
    /// let _: std::pin::Pin<ArenaBox<'_, _>> = fut; // pollable in place
    /// ```
    pub fn into_pin(b: Self) -> Pin<Self> {
        // SAFETY: the value is never moved out of its block while pinned:
        // the handle only gives it back through `Pin`'s own rules.
        unsafe { Pin::new_unchecked(b) }
    }
}

impl<'a, T> ArenaBox<'a, T> {
    /// Moves the value out and frees its block.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let s = smallmid::ArenaBox::into_inner(arena.alloc(String::from("x")));
    /// assert_eq!(s, "x");
    /// ```
    pub fn into_inner(b: Self) -> T {
        let p = Self::into_raw(b);
        // SAFETY: the handle owned an initialized `T`; read it out once,
        // then free the block without dropping the value again.
        unsafe {
            let value = p.read();
            free_block(NonNull::new_unchecked(p).cast(), Layout::new::<T>());
            value
        }
    }
}

impl<T: ?Sized> Drop for ArenaBox<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the handle owns an initialized `T` in a block allocated
        // with `Layout::for_value` (type invariant); drop it once, free once.
        unsafe {
            let layout = Layout::for_value(self.ptr.as_ref());
            ptr::drop_in_place(self.ptr.as_ptr());
            free_block(self.ptr.cast(), layout);
        }
    }
}

impl<T: ?Sized> Deref for ArenaBox<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the handle owns an initialized `T` (type invariant).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for ArenaBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: Clone> Clone for ArenaBox<'_, T> {
    /// Clones the value into the same arena.
    fn clone(&self) -> Self {
        let layout = Layout::new::<T>();
        let ptr: NonNull<T> = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: our block is live and was allocated with `layout`.
            unsafe { allocate_beside(self.ptr.cast(), layout) }
                .unwrap_or_else(|_| oom(layout))
                .cast()
        };
        let guard = Building {
            ptr,
            layout,
            done: 0,
        };
        // SAFETY: the block fits a `T`; if `clone` panics the guard frees it.
        unsafe { guard.ptr.as_ptr().write((**self).clone()) };
        let guard = ManuallyDrop::new(guard);
        // SAFETY: initialized above, in the arena this handle's lives in.
        unsafe { ArenaBox::from_non_null(guard.ptr) }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for ArenaBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for ArenaBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized> fmt::Pointer for ArenaBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&self.ptr, f)
    }
}

impl<T: ?Sized + PartialEq> PartialEq for ArenaBox<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: ?Sized + Eq> Eq for ArenaBox<'_, T> {}

impl<T: ?Sized + PartialOrd> PartialOrd for ArenaBox<'_, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: ?Sized + Ord> Ord for ArenaBox<'_, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: ?Sized + Hash> Hash for ArenaBox<'_, T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl<T: ?Sized> AsRef<T> for ArenaBox<'_, T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: ?Sized> AsMut<T> for ArenaBox<'_, T> {
    fn as_mut(&mut self) -> &mut T {
        self
    }
}

impl<T: ?Sized> Borrow<T> for ArenaBox<'_, T> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: ?Sized> BorrowMut<T> for ArenaBox<'_, T> {
    fn borrow_mut(&mut self) -> &mut T {
        self
    }
}

impl<I: Iterator + ?Sized> Iterator for ArenaBox<'_, I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        (**self).next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (**self).size_hint()
    }
}

impl<I: DoubleEndedIterator + ?Sized> DoubleEndedIterator for ArenaBox<'_, I> {
    fn next_back(&mut self) -> Option<I::Item> {
        (**self).next_back()
    }
}

impl<I: ExactSizeIterator + ?Sized> ExactSizeIterator for ArenaBox<'_, I> {}

impl<T: ?Sized> Unpin for ArenaBox<'_, T> {}

/// With the `nightly` feature, `ArenaBox<T>` coerces to `ArenaBox<dyn Trait>`
/// and `ArenaBox<[T; N]>` to `ArenaBox<[T]>`, like `Box`. On stable, use
/// [`ArenaBox::into_raw`], a pointer cast, and [`ArenaBox::from_raw`].
#[cfg(feature = "nightly")]
impl<'a, T: ?Sized + core::marker::Unsize<U>, U: ?Sized> core::ops::CoerceUnsized<ArenaBox<'a, U>>
    for ArenaBox<'a, T>
{
}

const _: () =
    assert!(mem::size_of::<ArenaBox<'static, [u8; 100_000]>>() == mem::size_of::<usize>());
