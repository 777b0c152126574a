//! Collections in an arena: allocator-api2's `Vec` and `Box` named for
//! `&SmallMidArena`, and a growable [`String`], as bumpalo's
//! `collections` offer.

use crate::arena::SmallMidArena;
use allocator_api2::alloc::AllocError;
use core::fmt;
use core::ops::{Deref, DerefMut};

/// allocator-api2's `Vec` in an arena.
///
/// # Example
/// ```
/// let arena = smallmid::SmallMidArena::new();
/// let mut v: smallmid::collections::Vec<'_, u32> = smallmid::collections::Vec::new_in(&arena);
/// v.push(1);
/// assert_eq!(v, [1]);
/// ```
pub type Vec<'a, T> = allocator_api2::vec::Vec<T, &'a SmallMidArena>;

/// allocator-api2's `Box` in an arena (it stores the arena reference; see
/// [`crate::ArenaBox`] for a handle one pointer wide).
///
/// # Example
/// ```
/// let arena = smallmid::SmallMidArena::new();
/// let b: smallmid::collections::Box<'_, u32> = smallmid::collections::Box::new_in(5, &arena);
/// assert_eq!(*b, 5);
/// ```
pub type Box<'a, T> = allocator_api2::boxed::Box<T, &'a SmallMidArena>;

/// A growable UTF-8 string in an arena, like bumpalo's
/// `collections::String`. Build one with [`format_in!`](crate::format_in).
///
/// # Example
/// ```
/// use std::fmt::Write;
/// let arena = smallmid::SmallMidArena::new();
/// let mut s = smallmid::String::new_in(&arena);
/// s.push_str("hello");
/// s.push(',');
/// write!(s, " {}", "world").unwrap();
/// assert_eq!(s, "hello, world");
/// assert_eq!(s.to_uppercase(), "HELLO, WORLD"); // Deref<Target = str>
/// ```
#[derive(Clone)]
pub struct String<'a> {
    /// Always valid UTF-8.
    vec: Vec<'a, u8>,
}

impl<'a> String<'a> {
    /// An empty string; allocates nothing until pushed to.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert!(smallmid::String::new_in(&arena).is_empty());
    /// ```
    pub fn new_in(arena: &'a SmallMidArena) -> Self {
        String {
            vec: Vec::new_in(arena),
        }
    }

    /// An empty string with room for `capacity` bytes.
    ///
    /// # Panics
    /// If no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert!(smallmid::String::with_capacity_in(100, &arena).capacity() >= 100);
    /// ```
    pub fn with_capacity_in(capacity: usize, arena: &'a SmallMidArena) -> Self {
        String {
            vec: Vec::with_capacity_in(capacity, arena),
        }
    }

    /// A copy of `s` in the arena.
    ///
    /// # Panics
    /// If no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(smallmid::String::from_str_in("abc", &arena), "abc");
    /// ```
    pub fn from_str_in(s: &str, arena: &'a SmallMidArena) -> Self {
        let mut out = Self::with_capacity_in(s.len(), arena);
        out.push_str(s);
        out
    }

    /// Appends `s`.
    ///
    /// # Panics
    /// If no memory can be had; see [`Self::try_push_str`].
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let mut s = smallmid::String::new_in(&arena);
    /// s.push_str("ab");
    /// assert_eq!(s.as_str(), "ab");
    /// ```
    pub fn push_str(&mut self, s: &str) {
        self.vec.extend_from_slice(s.as_bytes());
    }

    /// Appends `s`, or returns `AllocError` (the string unchanged).
    ///
    /// # Errors
    /// `AllocError` when the arena's limit or the OS refuses.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::builder().memory_limit(1 << 20).build();
    /// let mut s = smallmid::String::new_in(&arena);
    /// assert!(s.try_push_str(&"x".repeat(2 << 20)).is_err());
    /// s.try_push_str("fits")?;
    /// assert_eq!(s, "fits");
    /// # Ok::<(), smallmid::AllocError>(())
    /// ```
    pub fn try_push_str(&mut self, s: &str) -> Result<(), AllocError> {
        self.vec.try_reserve(s.len()).map_err(|_| AllocError)?;
        self.vec.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// Appends a character.
    ///
    /// # Panics
    /// If no memory can be had.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let mut s = smallmid::String::new_in(&arena);
    /// s.push('é');
    /// assert_eq!((s.as_str(), s.len()), ("é", 2));
    /// ```
    pub fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    /// The contents.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(smallmid::format_in!(&arena, "{}", 1).as_str(), "1");
    /// ```
    pub fn as_str(&self) -> &str {
        // SAFETY: only whole `&str`s and chars are ever appended.
        unsafe { core::str::from_utf8_unchecked(&self.vec) }
    }

    /// The contents, mutable.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let mut s = smallmid::String::from_str_in("abc", &arena);
    /// s.as_mut_str().make_ascii_uppercase();
    /// assert_eq!(s, "ABC");
    /// ```
    pub fn as_mut_str(&mut self) -> &mut str {
        // SAFETY: as above; `&mut str` only allows UTF-8-preserving writes.
        unsafe { core::str::from_utf8_unchecked_mut(&mut self.vec) }
    }

    /// Bytes of room before the string must grow.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// assert_eq!(smallmid::String::new_in(&arena).capacity(), 0);
    /// ```
    pub fn capacity(&self) -> usize {
        self.vec.capacity()
    }

    /// Empties the string, keeping its memory.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let mut s = smallmid::String::from_str_in("abc", &arena);
    /// s.clear();
    /// assert!(s.is_empty() && s.capacity() >= 3);
    /// ```
    pub fn clear(&mut self) {
        self.vec.clear();
    }

    /// The UTF-8 bytes as an arena `Vec`.
    ///
    /// # Example
    /// ```
    /// let arena = smallmid::SmallMidArena::new();
    /// let v = smallmid::String::from_str_in("hi", &arena).into_bytes();
    /// assert_eq!(v, *b"hi");
    /// ```
    pub fn into_bytes(self) -> Vec<'a, u8> {
        self.vec
    }
}

impl Deref for String<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl DerefMut for String<'_> {
    fn deref_mut(&mut self) -> &mut str {
        self.as_mut_str()
    }
}

impl fmt::Write for String<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.try_push_str(s).map_err(|_| fmt::Error)
    }
}

impl fmt::Display for String<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for String<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for String<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for String<'_> {}

impl PartialEq<str> for String<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for String<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl core::hash::Hash for String<'_> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl AsRef<str> for String<'_> {
    fn as_ref(&self) -> &str {
        self
    }
}

impl core::borrow::Borrow<str> for String<'_> {
    fn borrow(&self) -> &str {
        self
    }
}

/// Formats into a [`String`] in an arena, like `format!`
/// (bumpalo's `format!(in &bump, ...)`).
///
/// # Panics
/// If no memory can be had, or a `Display` implementation fails.
///
/// # Example
/// ```
/// let arena = smallmid::SmallMidArena::new();
/// let s = smallmid::format_in!(&arena, "{}-{:03}", "id", 7);
/// assert_eq!(s, "id-007");
/// ```
#[macro_export]
macro_rules! format_in {
    ($arena:expr, $($arg:tt)*) => {{
        let mut s = $crate::String::new_in($arena);
        ::core::fmt::Write::write_fmt(&mut s, ::core::format_args!($($arg)*))
            .expect("smallmid::format_in!: out of memory or a formatting error");
        s
    }};
}
