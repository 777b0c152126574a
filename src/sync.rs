//! The one place the engine gets its concurrency primitives from.
//!
//! Normally these are std's atomics, `Mutex` and a zero-cost `UnsafeCell`
//! wrapper; under `cfg(loom)` they are loom's, so the real engine code, not a
//! copy, runs inside `loom::model` (see `tests/loom.rs`). No other module
//! imports `std::sync`, `std::cell::UnsafeCell` or declares a thread-local
//! or a global directly.
//!
//! What loom cannot model is shimmed here:
//! - globals are `loom::lazy_static!` (fresh per model execution) instead of
//!   `static`s, via [`global!`];
//! - thread-locals use `loom::thread_local!`, whose destructors run when a
//!   loom thread ends, which is what a real thread exit does.

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
    pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

    /// `std::cell::UnsafeCell` with loom's closure API, so the same code
    /// compiles under both. `with`/`with_mut` inline to a plain pointer.
    #[derive(Debug, Default)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(v: T) -> Self {
            Self(std::cell::UnsafeCell::new(v))
        }
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
    pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
}

pub(crate) use imp::*;

/// Locks `m`, ignoring poison: no critical section in the engine calls user
/// code or panics midway, so a poisoned lock still guards consistent data.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Locks `m` if it is free right now (poison ignored, as in [`lock`]).
#[inline]
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Stores `v` (Release) into an atomic that other threads only swap.
/// Under loom, a swap: loom can order a plain store against another
/// thread's read-modify-write in a way C11 forbids (tokio-rs/loom#389:
/// the storing thread then reads a value older than its own store), and
/// would report failures no real execution has.
#[inline(always)]
pub(crate) fn store_against_swaps<T>(a: &AtomicPtr<T>, v: *mut T) {
    #[cfg(not(loom))]
    a.store(v, Ordering::Release);
    #[cfg(loom)]
    a.swap(v, Ordering::AcqRel);
}

/// Adds `n` to a counter that only the calling thread writes: a load and a
/// store, no read-modify-write, so it costs what a plain increment does.
/// Readers on other threads see some recent value.
#[inline(always)]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Declares a process-wide global: a `static` normally, a per-execution
/// `lazy_static` under loom. The initializer must be a const expression.
macro_rules! global {
    ($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        $(#[$m])*
        static $name: $t = $init;
        #[cfg(loom)]
        loom::lazy_static! {
            $(#[$m])*
            static ref $name: $t = $init;
        }
    };
}

/// Declares a thread-local with a const initializer (std) or loom's.
macro_rules! thread_local_const {
    ($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$m])* static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$m])* static $name: $t = $init; }
    };
}

pub(crate) use {global, thread_local_const};
