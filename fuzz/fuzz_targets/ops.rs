//! Decodes bytes into alloc/free/grow/shrink operations on up to three
//! arenas (with arena drops in between) and checks every block against a
//! model: alignment, no overlap between live blocks, contents kept.
//! Shared by the fuzz target and by `tests/fuzz_corpus.rs`, which replays
//! the committed corpus on stable.

use allocator_api2::alloc::Allocator;
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::SmallMidArena;
use std::collections::BTreeMap;

struct Live {
    arena: usize,
    ptr: NonNull<u8>,
    layout: Layout,
    fill: u8,
}

/// A cursor over the input; runs dry as zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn layout(&mut self) -> Layout {
        // Mostly the design centre; large paths rarer, sizes capped, so
        // an input costs microseconds, not a fresh mapping per block.
        let size = match self.u8() % 32 {
            0 => 0,
            1..=23 => (self.u16() % 1100) as usize,
            24..=27 => (self.u16() as usize) % (40 << 10),
            28..=30 => (self.u16() as usize) * 4, // up to 256 KiB: spans
            _ => (1 << 20) + (self.u16() as usize % 64) * 4096, // huge
        };
        let align = match self.u8() {
            0..=199 => 1usize << (self.u8() % 7),
            _ => 1usize << (self.u8() % 17),
        };
        Layout::from_size_align(size, align).unwrap()
    }
}

/// Bytes filled and checked at each end of a block: all of a small one;
/// the edges of a large one, where a neighbour's overlap would show, so an
/// input costs microseconds, not a megabyte of writes.
const EDGE: usize = 512;

/// The filled ranges of a block of `len` bytes: `[0, a)` and `[b, len)`.
fn edges(len: usize) -> (usize, usize) {
    if len <= 2 * EDGE {
        (len, len)
    } else {
        (EDGE, len - EDGE)
    }
}

/// Checks the first `len` bytes' filled edges hold `fill`.
fn check_prefix(p: *const u8, len: usize, full: usize, fill: u8) {
    let (a, b) = edges(full);
    for range in [0..a.min(len), b.min(len)..len] {
        // SAFETY: the block is live and at least `len` long.
        let bytes = unsafe { core::slice::from_raw_parts(p.add(range.start), range.len()) };
        assert!(bytes.iter().all(|&x| x == fill), "block contents changed");
    }
}

fn check(live: &Live) {
    let n = live.layout.size();
    check_prefix(live.ptr.as_ptr(), n, n, live.fill);
}

fn insert(blocks: &mut BTreeMap<usize, Live>, live: Live) {
    let start = live.ptr.as_ptr() as usize;
    assert_eq!(start % live.layout.align(), 0, "misaligned block");
    if live.layout.size() == 0 {
        return; // zero-sized: dangling, owns nothing
    }
    let end = start + live.layout.size();
    if let Some((&s, prev)) = blocks.range(..end).next_back() {
        assert!(s + prev.layout.size() <= start, "blocks overlap");
    }
    let (a, b) = edges(live.layout.size());
    // SAFETY: a fresh block of at least `size` bytes.
    unsafe {
        live.ptr.as_ptr().write_bytes(live.fill, a);
        live.ptr
            .as_ptr()
            .add(b)
            .write_bytes(live.fill, live.layout.size() - b);
    }
    blocks.insert(start, live);
}

std::thread_local! {
    /// Arenas kept across inputs (reset at each start): an input pays for
    /// no arena creation unless it drops one.
    static ARENAS: std::cell::RefCell<[Option<SmallMidArena>; 3]> =
        const { std::cell::RefCell::new([None, None, None]) };
}

/// Runs the operations encoded in `data`.
pub fn run(data: &[u8]) {
    ARENAS.with(|a| {
        let mut arenas = a.borrow_mut();
        for arena in arenas.iter_mut().flatten() {
            arena.reset();
            assert_eq!(arena.stats().blocks_in_use, 0, "reset left blocks");
        }
        run_on(data, &mut arenas);
    })
}

fn run_on(data: &[u8], arenas: &mut [Option<SmallMidArena>; 3]) {
    let mut input = Bytes(data);
    let mut blocks: BTreeMap<usize, Live> = BTreeMap::new();
    let mut fill = 0u8;
    for _ in 0..256 {
        if input.0.is_empty() {
            break;
        }
        let op = input.u8();
        let a = (op as usize >> 4) % 3;
        fill = fill.wrapping_add(1);
        match op % 8 {
            0..=2 => {
                let arena = arenas[a].get_or_insert_with(SmallMidArena::new);
                let layout = input.layout();
                let block = arena.allocate(layout).expect("allocation failed");
                assert!(block.len() >= layout.size());
                insert(
                    &mut blocks,
                    Live {
                        arena: a,
                        ptr: block.cast(),
                        layout,
                        fill,
                    },
                );
            }
            3 | 4 if !blocks.is_empty() => {
                let key = *blocks
                    .keys()
                    .nth(input.u16() as usize % blocks.len())
                    .unwrap();
                let live = blocks.remove(&key).unwrap();
                check(&live);
                let arena = arenas[live.arena].as_ref().unwrap();
                if op % 8 == 3 {
                    // SAFETY: allocated from `arena` with this layout.
                    unsafe { arena.deallocate(live.ptr, live.layout) };
                } else {
                    let want = input.layout();
                    let new = Layout::from_size_align(want.size(), live.layout.align()).unwrap();
                    // SAFETY: allocated from `arena` with `live.layout`.
                    let r = unsafe {
                        if new.size() >= live.layout.size() {
                            arena.grow(live.ptr, live.layout, new)
                        } else {
                            arena.shrink(live.ptr, live.layout, new)
                        }
                    };
                    let block = r.expect("realloc failed");
                    let keep = live.layout.size().min(new.size());
                    check_prefix(
                        block.cast::<u8>().as_ptr(),
                        keep,
                        live.layout.size(),
                        live.fill,
                    );
                    insert(
                        &mut blocks,
                        Live {
                            arena: live.arena,
                            ptr: block.cast(),
                            layout: new,
                            fill,
                        },
                    );
                }
            }
            5 => {
                // Drop an arena with its blocks still live: released at once.
                blocks.retain(|_, l| l.arena != a);
                arenas[a] = None;
            }
            6 => {
                if let Some(arena) = &arenas[a] {
                    arena.flush_thread_cache();
                }
            }
            _ => {
                if let Some(arena) = &arenas[a] {
                    let s = arena.stats();
                    let mine = blocks
                        .values()
                        .filter(|l| l.arena == a && l.layout.size() > 0)
                        .count() as u64;
                    assert_eq!(s.blocks_in_use, mine, "stats disagree with the model");
                    if op & 0x40 != 0 {
                        arena.audit(); // every lock and slab: the costly check, half as often
                    }
                }
            }
        }
    }
    for live in blocks.values() {
        check(live);
    }
}
