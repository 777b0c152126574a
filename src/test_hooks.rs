//! Hooks for this crate's own tests (feature `test-hooks`): not part of
//! the API, off in every build that does not ask for them.

pub use crate::audit::Audit;
pub use crate::os::fail_next_maps;

/// Runs `f` as a thread without a front cache (as one whose thread-locals
/// are being destroyed, or one past the slot table): every allocation and
/// free takes the arena's central lists directly.
pub fn cacheless<R>(f: impl FnOnce() -> R) -> R {
    let old = crate::thread::set_tid(crate::thread::DEAD);
    let r = f();
    crate::thread::set_tid(old);
    r
}

/// Makes thread indices handed out from now on start at `first`, so a test
/// with a few threads reaches the slot chunks (indices 64 and up).
pub fn first_thread_index(first: u32) {
    crate::thread::set_tid_offset(first);
}
