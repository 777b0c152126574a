//! Huge blocks grow and shrink by resizing their mapping (`mremap` on
//! Linux, a copy elsewhere): contents kept, alignment kept, the memory
//! limit exact, refusals leave the block intact.
//! Its own binary: it reads process-wide counters and uses the failure hook.

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;
use smallmid::test_hooks::fail_next_maps;
use smallmid::{global_stats, SmallMidArena};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());
const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

/// Bytes mapped for a huge block of `usable` bytes resized to it: one page
/// for the header, and on Linux whole 2 MiB huge pages past the first.
fn mapped(usable: usize) -> usize {
    let len = usable + PAGE;
    if cfg!(all(target_os = "linux", not(miri))) && len >= 2 * MIB {
        len.next_multiple_of(2 * MIB)
    } else {
        len
    }
}

fn lay(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Writes a pattern every page of `[p, p + len)` (and its last byte).
fn fill(p: NonNull<u8>, len: usize, seed: u8) {
    for off in (0..len).step_by(PAGE).chain([len - 1]) {
        // SAFETY: callers pass a live block of at least `len` bytes.
        unsafe { p.as_ptr().add(off).write(seed ^ (off / PAGE) as u8) };
    }
}

/// Checks the pattern at every page start below `len`.
fn check(p: NonNull<u8>, len: usize, seed: u8) {
    for off in (0..len).step_by(PAGE) {
        // SAFETY: as in `fill`.
        let b = unsafe { p.as_ptr().add(off).read() };
        assert_eq!(b, seed ^ (off / PAGE) as u8, "byte {off} lost");
    }
}

#[test]
fn grow_and_shrink_keep_contents_and_account() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = SmallMidArena::new();
    let mut l = lay(2 * MIB, 8);
    let mut p = a.allocate(l).unwrap().cast::<u8>();
    fill(p, l.size(), 1);
    let maps = global_stats().mmaps;
    for mib in 3..=64 {
        let n = lay(mib * MIB, 8);
        // SAFETY: `p` is live with layout `l`; `n` is larger.
        p = unsafe { a.grow(p, l, n) }.unwrap().cast();
        check(p, l.size(), 1);
        fill(p, n.size(), 1);
        l = n;
    }
    let s = a.stats();
    assert_eq!(s.bytes_in_use, (mapped(64 * MIB) - PAGE) as u64, "{s}");
    assert_eq!(s.huge_bytes, mapped(64 * MIB) as u64, "{s}");
    if cfg!(all(target_os = "linux", not(miri))) {
        assert_eq!(global_stats().mmaps, maps, "grew by mapping anew");
    }
    let n = lay(3 * MIB + 5, 8);
    // SAFETY: `p` is live with layout `l`; `n` is smaller.
    let b = unsafe { a.shrink(p, l, n) }.unwrap();
    p = b.cast();
    check(p, n.size(), 1);
    let s = a.stats();
    if cfg!(all(target_os = "linux", not(miri))) {
        assert_eq!(b.len(), 4 * MIB - PAGE, "shrink gave no memory back");
        assert_eq!(s.huge_bytes, 4 * MIB as u64, "{s}");
    }
    // SAFETY: `p` is live with layout `n`.
    unsafe { a.deallocate(p, n) };
    let s = a.stats();
    assert_eq!((s.bytes_in_use, s.huge_bytes), (0, 0), "{s}");
}

#[test]
fn alignment_over_a_page_survives_growth() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = SmallMidArena::new();
    let mut l = lay(2 * MIB, 64 << 10);
    let mut p = a.allocate(l).unwrap().cast::<u8>();
    fill(p, l.size(), 2);
    // Other mappings in the way make in-place growth fail now and then.
    let mut others = Vec::new();
    for step in 1..=24 {
        let n = lay(l.size() + step * 256 * 1024, l.align());
        others.push(a.allocate(lay(2 * MIB, 8)).unwrap());
        // SAFETY: `p` is live with layout `l`; `n` is larger.
        p = unsafe { a.grow(p, l, n) }.unwrap().cast();
        assert_eq!(p.as_ptr() as usize % l.align(), 0, "alignment lost");
        check(p, l.size(), 2);
        fill(p, n.size(), 2);
        l = n;
    }
    // SAFETY: `p` is live with layout `l`.
    unsafe { a.deallocate(p, l) };
    for o in others {
        // SAFETY: allocated above with this layout.
        unsafe { a.deallocate(o.cast(), lay(2 * MIB, 8)) };
    }
}

#[test]
fn growth_past_the_limit_is_an_error_and_exact() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let limit = 16 * MIB;
    let a = SmallMidArena::builder().memory_limit(limit).build();
    let l = lay(2 * MIB, 8);
    let block = a.allocate(l).unwrap();
    let p = block.cast::<u8>();
    fill(p, l.size(), 3);
    // A recycled arena's cache may hold a warm slab, which a refused grow
    // gives back before its retry (and then fits): none, so `held` is exact.
    a.flush_thread_cache();
    let held = a.stats().bytes_held as usize; // home SuperSlab + the block
                                              // The most that fits: every byte of the limit, past what the block got
                                              // (more than asked when it took a kept mapping another test freed).
    let most = block.len() + (limit - held);
    // SAFETY: `p` is live with layout `l`; the new layout is larger.
    let too_far = unsafe { a.grow(p, l, lay(most + 1, 8)) };
    assert_eq!(too_far, Err(AllocError));
    check(p, l.size(), 3);
    assert_eq!(a.stats().bytes_held as usize, held);
    let n = lay(most, 8);
    // SAFETY: `p` is live (a failed grow leaves it so) with layout `l`.
    let q = unsafe { a.grow(p, l, n) };
    if !cfg!(all(target_os = "linux", not(miri))) {
        // A copy needs old and new at once: past the limit.
        assert_eq!(q, Err(AllocError));
        // SAFETY: `p` is live with layout `l`.
        unsafe { a.deallocate(p, l) };
        return;
    }
    let q = q.expect("growth to exactly the limit");
    let q = q.cast::<u8>();
    check(q, l.size(), 3);
    fill(q, n.size(), 3);
    assert_eq!(a.stats().bytes_held as usize, limit);
    // SAFETY: `q` is live with layout `n`.
    unsafe { a.deallocate(q, n) };
}

#[test]
fn refused_growth_leaves_the_block_intact() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = SmallMidArena::new();
    let l = lay(4 * MIB, 8);
    let p = a.allocate(l).unwrap().cast::<u8>();
    fill(p, l.size(), 4);
    fail_next_maps(u64::MAX);
    // SAFETY: `p` is live with layout `l`; the new layout is larger.
    let r = unsafe { a.grow(p, l, lay(40 * MIB, 8)) };
    fail_next_maps(0);
    assert_eq!(r, Err(AllocError));
    check(p, l.size(), 4);
    let s = a.stats();
    assert_eq!(s.huge_bytes, (4 * MIB + PAGE) as u64, "{s}");
    // SAFETY: `p` is live with layout `l`.
    unsafe { a.deallocate(p, l) };
}

#[test]
#[cfg(all(target_os = "linux", not(miri)))]
fn growth_by_small_steps_gets_huge_pages() {
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    if !thp.is_ok_and(|m| m.contains("[madvise]") || m.contains("[always]")) {
        eprintln!("transparent huge pages unavailable: nothing to check");
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let faults = || {
        // SAFETY: getrusage writes only the struct we pass.
        unsafe {
            let mut u: libc::rusage = core::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut u);
            u.ru_minflt
        }
    };
    let a = SmallMidArena::new();
    let mut v = allocator_api2::vec::Vec::<u8, _>::new_in(&a);
    v.resize(2 * MIB, 1);
    let f0 = faults();
    while v.len() < 32 * MIB {
        v.reserve_exact(PAGE);
        v.extend_from_slice(&[2; PAGE]);
    }
    let f = faults() - f0;
    // 30 MiB is 7,680 small pages and 15 huge ones.
    assert!(f < 1000, "{f} faults growing 2 MiB -> 32 MiB by 4 KiB");
}

/// A fresh huge block's mapping is rounded up to whole 2 MiB pages where
/// that adds at most a quarter (so its tail gets huge pages too), or where
/// it is one huge page, half of it is the block and the arena held half of
/// the block already; the block's length says so; never past the limit.
#[test]
fn fresh_huge_blocks_take_whole_huge_pages_within_a_quarter() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    smallmid::trim_warm_cache(); // no kept mapping of another size
    let thp = cfg!(all(target_os = "linux", not(miri)));
    let a = SmallMidArena::new();
    for (size, rounded) in [
        (9 * MIB, 10 * MIB),       // + 1 MiB - 4 KiB: a ninth
        (17 * MIB + 16, 18 * MIB), // the 2^20-bucket hash table
        (2 * MIB + 128 * 1024, 0), // + 1.9 MiB: not rounded
        (2 * MIB - 8192, 2 * MIB), // with its header, just one huge page
        (MIB + 64 * 1024, 0),      // a lone 1..2 MiB block: not rounded
        (4 * MIB + 256 * 1024, 0), // + 1.7 MiB on 4.25: not rounded
    ] {
        let l = lay(size, 8);
        let b = a.allocate(l).unwrap();
        let want = if thp && rounded != 0 {
            rounded - PAGE
        } else {
            size.next_multiple_of(PAGE)
        };
        assert_eq!(b.len(), want, "block of {size} bytes");
        // SAFETY: the whole returned length is the block's.
        unsafe { b.cast::<u8>().as_ptr().add(b.len() - 1).write(1) };
        // SAFETY: allocated above with `l`.
        unsafe { a.deallocate(b.cast(), l) };
        smallmid::trim_warm_cache();
    }
    // A block of 1 MiB or more that about doubles the arena's last large
    // one (a table growing) takes whole huge pages, up to twice its size;
    // under 1 MiB mapped, never.
    let half = lay(600 * 1024, 8);
    let h = a.allocate(half).unwrap();
    for (size, rounded) in [
        (MIB + 64 * 1024, 2 * MIB),      // twice the 600 KiB: one huge page
        (2 * MIB + 128 * 1024, 4 * MIB), // twice that again: + 1.9 MiB
        (1000 * 1024, 0),                // under 1 MiB mapped: never
    ] {
        let l = lay(size, 8);
        let b = a.allocate(l).unwrap();
        let want = if thp && rounded != 0 {
            rounded - PAGE
        } else {
            size.next_multiple_of(PAGE)
        };
        assert_eq!(b.len(), want, "block of {size} bytes after one of 600 KiB");
        // SAFETY: allocated above with `l`.
        unsafe { a.deallocate(b.cast(), l) };
        smallmid::trim_warm_cache(); // its mapping is not kept for the next
    }
    // SAFETY: allocated above with `half`.
    unsafe { a.deallocate(h.cast(), half) };
    // Under a limit that the rounding would pass, the block is not rounded.
    let lim = SmallMidArena::builder()
        .memory_limit(9 * MIB + 2 * PAGE)
        .build();
    let l = lay(9 * MIB, 8);
    let b = lim.allocate(l).unwrap();
    assert_eq!(b.len(), 9 * MIB);
    assert!(lim.stats().bytes_held <= (9 * MIB + 2 * PAGE) as u64);
    // SAFETY: allocated above with `l`.
    unsafe { lim.deallocate(b.cast(), l) };
}

/// A span of 256 KiB or more, about twice the arena's last large block,
/// that finds no room in the arena's SuperSlabs takes a huge-paged one (a
/// table growing past its first SuperSlab); a long span that does not
/// double the last, a short one, and any span under a memory limit do not.
#[test]
fn long_spans_past_the_arena_s_room_take_huge_pages() {
    let thp = cfg!(all(target_os = "linux", not(miri)));
    for limited in [false, true] {
        let a = if limited {
            SmallMidArena::builder().memory_limit(64 * MIB).build()
        } else {
            SmallMidArena::new()
        };
        let three = lay(3 << 16, 8);
        let four = lay(4 << 16, 8);
        let mut live = Vec::new();
        let mut take = |l: Layout| {
            live.push((a.allocate(l).unwrap(), l));
            let au = a.audit();
            (au.superslabs, au.huge_paged)
        };
        // Five spans of three slabs fill the first SuperSlab (slab 0 is
        // its header); a sixth takes a second one, small-paged.
        for _ in 0..5 {
            take(three);
        }
        assert_eq!(take(three), (2, 0), "limited: {limited}");
        // Two more and a long span that does not double the last (4
        // slabs after 3) fill the second; another such span takes a third
        // SuperSlab, small-paged.
        for _ in 0..2 {
            take(three);
        }
        assert_eq!(take(four), (2, 0), "limited: {limited}");
        assert_eq!(take(four), (3, 0), "limited: {limited}");
        // Fill the third (11 slabs left: 3 + 4 + 4); a span twice the last
        // then takes a fourth, huge-paged.
        take(three);
        take(four);
        take(four);
        let want = usize::from(thp && !limited);
        assert_eq!(take(lay(8 << 16, 8)), (4, want), "limited: {limited}");
        for (b, l) in live {
            // SAFETY: allocated above with `l`, freed once.
            unsafe { a.deallocate(b.cast(), l) };
        }
    }
}
