//! bumpalo's allocation methods, for code switching from a `Bump`: the same
//! names, returning owning [`ArenaBox`]es instead of `&mut` references.

use crate::arena::SmallMidArena;
use crate::boxed::{oom, ArenaBox, Building};
use allocator_api2::alloc::AllocError;
use core::alloc::Layout;
use core::mem::ManuallyDrop;

impl SmallMidArena {
    /// Like bumpalo's `alloc_try_with`: allocates, then calls `f`; on
    /// `Err` the block is freed and the error returned.
    ///
    /// # Panics
    /// If `f` panics or no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let ok = arena.alloc_try_with(|| "42".parse::<u32>()).unwrap();
    /// assert_eq!(*ok, 42);
    /// assert!(arena.alloc_try_with(|| "x".parse::<u32>()).is_err());
    /// assert_eq!(arena.stats().blocks_in_use, 1); // the failed one was freed
    /// ```
    pub fn alloc_try_with<T, E>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<ArenaBox<'_, T>, E> {
        let layout = Layout::new::<T>();
        let guard = Building::<T> {
            ptr: self.block(layout).unwrap_or_else(|_| oom(layout)),
            layout,
            done: 0,
        };
        let value = f()?; // on `Err` or a panic the guard frees the block
                          // SAFETY: the block fits a `T`.
        unsafe { guard.ptr.as_ptr().write(value) };
        let guard = ManuallyDrop::new(guard);
        // SAFETY: initialized above; ownership moves to the handle.
        Ok(unsafe { ArenaBox::from_non_null(guard.ptr) })
    }

    /// Builds a slice from an iterator of known length.
    ///
    /// # Panics
    /// If the iterator yields fewer items than its `len()`, or no memory can
    /// be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let s = arena.alloc_slice_fill_iter((1..4u32).map(|i| i * 10));
    /// assert_eq!(&*s, &[10, 20, 30]);
    /// ```
    pub fn alloc_slice_fill_iter<T, I>(&self, iter: I) -> ArenaBox<'_, [T]>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: ExactSizeIterator,
    {
        self.try_alloc_slice_fill_iter(iter)
            .unwrap_or_else(|_| oom(Layout::new::<T>()))
    }

    /// [`Self::alloc_slice_fill_iter`], or `AllocError` when no memory can be
    /// had.
    ///
    /// # Errors
    /// `AllocError` when the size overflows or the limit or the OS refuses.
    ///
    /// # Panics
    /// If the iterator yields fewer items than its `len()`.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let s = arena.try_alloc_slice_fill_iter(["a", "b"])?;
    /// assert_eq!(s.concat(), "ab");
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_alloc_slice_fill_iter<T, I>(&self, iter: I) -> Result<ArenaBox<'_, [T]>, AllocError>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: ExactSizeIterator,
    {
        let mut iter = iter.into_iter();
        self.try_alloc_slice_fill_with(iter.len(), |_| {
            iter.next()
                .expect("smallmid: iterator yielded fewer items than its len()")
        })
    }

    /// A slice of `len` copies of `value`.
    ///
    /// # Panics
    /// If no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(&*arena.alloc_slice_fill_copy(3, 7u8), &[7, 7, 7]);
    /// ```
    pub fn alloc_slice_fill_copy<T: Copy>(&self, len: usize, value: T) -> ArenaBox<'_, [T]> {
        self.alloc_slice_fill_with(len, |_| value)
    }

    /// [`Self::alloc_slice_fill_copy`], or `AllocError`.
    ///
    /// # Errors
    /// `AllocError` when the size overflows or the limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert!(arena.try_alloc_slice_fill_copy(usize::MAX, 0u64).is_err());
    /// ```
    pub fn try_alloc_slice_fill_copy<T: Copy>(
        &self,
        len: usize,
        value: T,
    ) -> Result<ArenaBox<'_, [T]>, AllocError> {
        self.try_alloc_slice_fill_with(len, |_| value)
    }

    /// A slice of `len` clones of `value`.
    ///
    /// # Panics
    /// If a `clone` panics (the clones made are dropped) or no memory can be
    /// had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let s = arena.alloc_slice_fill_clone(2, &String::from("hi"));
    /// assert_eq!(s.concat(), "hihi");
    /// ```
    pub fn alloc_slice_fill_clone<T: Clone>(&self, len: usize, value: &T) -> ArenaBox<'_, [T]> {
        self.alloc_slice_fill_with(len, |_| value.clone())
    }

    /// [`Self::alloc_slice_fill_clone`], or `AllocError`.
    ///
    /// # Errors
    /// `AllocError` when the size overflows or the limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(arena.try_alloc_slice_fill_clone(1, &vec![1])?[0], [1]);
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_alloc_slice_fill_clone<T: Clone>(
        &self,
        len: usize,
        value: &T,
    ) -> Result<ArenaBox<'_, [T]>, AllocError> {
        self.try_alloc_slice_fill_with(len, |_| value.clone())
    }

    /// A slice of `len` default values.
    ///
    /// # Panics
    /// If no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(&*arena.alloc_slice_fill_default::<u16>(2), &[0, 0]);
    /// ```
    pub fn alloc_slice_fill_default<T: Default>(&self, len: usize) -> ArenaBox<'_, [T]> {
        self.alloc_slice_fill_with(len, |_| T::default())
    }

    /// [`Self::alloc_slice_fill_default`], or `AllocError`.
    ///
    /// # Errors
    /// `AllocError` when the size overflows or the limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(1 << 20).build();
    /// assert!(arena.try_alloc_slice_fill_default::<u8>(8 << 20).is_err());
    /// ```
    pub fn try_alloc_slice_fill_default<T: Default>(
        &self,
        len: usize,
    ) -> Result<ArenaBox<'_, [T]>, AllocError> {
        self.try_alloc_slice_fill_with(len, |_| T::default())
    }

    /// [`Self::alloc_slice_copy`], or `AllocError`.
    ///
    /// # Errors
    /// `AllocError` when the arena's limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(&*arena.try_alloc_slice_copy(&[1, 2])?, &[1, 2]);
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_alloc_slice_copy<T: Copy>(
        &self,
        src: &[T],
    ) -> Result<ArenaBox<'_, [T]>, AllocError> {
        self.try_alloc_slice_fill_with(src.len(), |i| src[i])
    }

    /// [`Self::alloc_slice_clone`], or `AllocError`.
    ///
    /// # Errors
    /// `AllocError` when the arena's limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let s = arena.try_alloc_slice_clone(&[String::from("a")])?;
    /// assert_eq!(s[0], "a");
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_alloc_slice_clone<T: Clone>(
        &self,
        src: &[T],
    ) -> Result<ArenaBox<'_, [T]>, AllocError> {
        self.try_alloc_slice_fill_with(src.len(), |i| src[i].clone())
    }

    /// [`Self::alloc_str`], or `AllocError`.
    ///
    /// # Errors
    /// `AllocError` when the arena's limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(&*arena.try_alloc_str("hé")?, "hé");
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_alloc_str(&self, src: &str) -> Result<ArenaBox<'_, str>, AllocError> {
        let bytes = ArenaBox::into_raw(self.try_alloc_slice_copy(src.as_bytes())?);
        // SAFETY: a UTF-8 copy of `src`, owned, now typed as `str`.
        Ok(unsafe { ArenaBox::from_raw(bytes as *mut str) })
    }
}

impl<'a, T: ?Sized> ArenaBox<'a, T> {
    /// Retypes the handle through `f`, which must return its argument as
    /// another type of the same address and layout: the unsized coercion
    /// that [`arena_box_dyn!`](crate::arena_box_dyn) writes. Anything else
    /// panics (the value is then dropped, the block freed).
    #[doc(hidden)]
    pub fn __unsize<U: ?Sized>(
        b: Self,
        f: impl for<'x> FnOnce(&'x mut T) -> &'x mut U,
    ) -> ArenaBox<'a, U> {
        let mut b = ManuallyDrop::new(b);
        let from: *mut T = &mut **b;
        let layout = Layout::for_value::<T>(&**b);
        let to: *mut U = f(&mut **b);
        // SAFETY: `to` borrows from the value `b` owns, which is live.
        let same =
            to.cast::<u8>() == from.cast::<u8>() && Layout::for_value(unsafe { &*to }) == layout;
        if !same {
            drop(ManuallyDrop::into_inner(b));
            panic!("smallmid: arena_box_dyn! may only coerce, not change the value");
        }
        // SAFETY: `to` is the owned value at the same address with the same
        // layout, so it drops and frees as the original would.
        unsafe { ArenaBox::from_raw(to) }
    }
}

/// Turns an `ArenaBox<T>` into an `ArenaBox<dyn Trait>` (or `[T; N]` into
/// `[T]`) on stable Rust, as bumpalo's `from_raw` idiom does, checked by the
/// compiler: only an unsized coercion that `Box` would allow compiles, and
/// the handle keeps its arena's lifetime.
///
/// # Example
/// ```
/// use smallmid::{arena_box_dyn, ArenaBox, SmallMidArena};
/// use std::fmt::Display;
/// let arena = SmallMidArena::new();
/// let items: Vec<ArenaBox<'_, dyn Display>> = vec![
///     arena_box_dyn!(arena.alloc(1u8), dyn Display),
///     arena_box_dyn!(arena.alloc("two"), dyn Display),
/// ];
/// assert_eq!(items.iter().map(|d| d.to_string()).collect::<Vec<_>>(), ["1", "two"]);
/// let s: ArenaBox<'_, [u32]> = arena_box_dyn!(arena.alloc([1u32, 2]), [u32]);
/// assert_eq!(s.len(), 2);
/// ```
///
/// Only real coercions compile:
///
/// ```compile_fail
/// let arena = smallmid::SmallMidArena::new();
/// let b = smallmid::arena_box_dyn!(arena.alloc(1u8), dyn Iterator<Item = u8>); // u8: !Iterator
/// ```
///
/// ```compile_fail
/// let arena = smallmid::SmallMidArena::new();
/// let b = smallmid::arena_box_dyn!(arena.alloc([1u8; 4]), [u16]); // no cast of the element type
/// ```
///
/// and the result cannot outlive its arena:
///
/// ```compile_fail
/// let b = {
///     let arena = smallmid::SmallMidArena::new();
///     smallmid::arena_box_dyn!(arena.alloc(1u8), dyn std::fmt::Debug)
/// };
/// ```
#[macro_export]
macro_rules! arena_box_dyn {
    ($boxed:expr, $target:ty) => {
        $crate::ArenaBox::__unsize::<$target>($boxed, |p| p)
    };
}
