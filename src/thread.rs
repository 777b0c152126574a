//! Threads' dense indices: each thread that uses an arena gets the lowest
//! free index, read on every allocation and free (a single thread-relative
//! load), and gives it back at exit once every cache of its is retired, so
//! a new thread given the index finds every slot of it empty. The arenas a
//! thread uses, and what its exit returns, are the arena's
//! ([`crate::arena`]).

use crate::sync::{global, lock, thread_local_const, AtomicU64, Mutex, Ordering};
use core::cell::Cell;

/// No index yet.
pub(crate) const NO_TID: u32 = u32::MAX;
/// This thread's thread-locals are being destroyed: no cache any more.
pub(crate) const DEAD: u32 = u32::MAX - 1;

thread_local_const! {
    /// This thread's index, read on every alloc and free (no destructor, so
    /// reading it is a single thread-relative load).
    static TID: Cell<u32> = Cell::new(NO_TID);
}
/// This thread's index: [`DEAD`] or an index past the slot table mean no
/// front cache; `u32::MAX` none assigned yet.
#[inline(always)]
pub(crate) fn current_tid() -> u32 {
    TID.try_with(Cell::get).unwrap_or(DEAD)
}

thread_local_const! {
    /// This thread's shard number, dealt round robin at first use.
    static SHARD: Cell<usize> = Cell::new(usize::MAX);
}

global! {
    static NEXT_SHARD: AtomicU64 = AtomicU64::new(0);
}

/// This thread's shard of `n`, for sharded pools (seeds, spare arenas):
/// dealt round robin at first use, not taken from the thread's index, which
/// a thread gets only with its first cache; 0 once thread-locals are gone.
pub(crate) fn shard(n: usize) -> usize {
    SHARD
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) as usize);
            }
            s.get() % n
        })
        .unwrap_or(0)
}

/// Sets this thread's index (an index just acquired, or [`DEAD`]).
pub(crate) fn set_current(tid: u32) {
    let _ = TID.try_with(|t| t.set(tid));
}

struct Tids {
    /// Bit set: index `offset + bit` in use.
    words: Vec<u64>,
    /// Added to every index handed out (0; tests raise it).
    offset: u32,
}

global! {
    static TIDS: Mutex<Tids> = Mutex::new(Tids { words: Vec::new(), offset: 0 });
}

/// Sets this thread's index, returning the old one (test hooks).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_tid(tid: u32) -> u32 {
    TID.try_with(|t| t.replace(tid)).unwrap_or(DEAD)
}

/// Offsets indices handed out from now on (test hooks).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_tid_offset(offset: u32) {
    let mut t = lock(&TIDS);
    assert!(
        t.words.iter().all(|&w| w == 0),
        "set the index offset before any thread has one"
    );
    t.offset = offset;
}

/// One shard of the live-arena count, on its own cache line.
#[repr(align(128))]
struct LiveShard(AtomicU64);

const LIVE_SHARDS: usize = 16;

#[cfg(not(loom))]
static LIVE: [LiveShard; LIVE_SHARDS] = [const { LiveShard(AtomicU64::new(0)) }; LIVE_SHARDS];
#[cfg(loom)]
loom::lazy_static! {
    static ref LIVE: [LiveShard; LIVE_SHARDS] =
        core::array::from_fn(|_| LiveShard(AtomicU64::new(0)));
}

/// Counts an arena handle made (`+1`) or dropped (`-1`): arenas whose
/// handle is alive (a recycled spare is not). Sharded by thread, so
/// threads creating and dropping arenas do not share a cache line; a shard
/// may go below zero (wrapping), the sum does not.
pub(crate) fn count_live(delta: i64) {
    let shard = &LIVE[current_tid() as usize % LIVE_SHARDS].0;
    shard.fetch_add(delta as u64, Ordering::Relaxed);
}

/// Number of live arena handles.
pub(crate) fn live_arenas() -> usize {
    LIVE.iter()
        .fold(0u64, |n, s| n.wrapping_add(s.0.load(Ordering::Relaxed))) as usize
}

/// Threads holding an index: threads that used an arena and have not
/// finished exiting.
pub(crate) fn threads() -> usize {
    lock(&TIDS)
        .words
        .iter()
        .map(|w| w.count_ones() as usize)
        .sum()
}

/// Takes the lowest free index (once per thread).
pub(crate) fn acquire_tid() -> u32 {
    let mut t = lock(&TIDS);
    let word = match t.words.iter().position(|w| *w != u64::MAX) {
        Some(i) => i,
        None => {
            t.words.push(0);
            t.words.len() - 1
        }
    };
    let bit = t.words[word].trailing_ones() as usize;
    t.words[word] |= 1 << bit;
    (word * 64 + bit) as u32 + t.offset
}

/// Frees an index once every cache of its thread is retired.
pub(crate) fn release_tid(tid: u32) {
    let mut t = lock(&TIDS);
    let tid = tid - t.offset;
    let (word, bit) = (tid as usize / 64, tid as usize % 64);
    debug_assert!(
        t.words[word] & (1 << bit) != 0,
        "thread index released twice"
    );
    t.words[word] &= !(1 << bit);
}
