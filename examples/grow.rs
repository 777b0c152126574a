//! A `Vec<u8>` grown 4 KiB at a time to 256 MiB: smallmid (huge blocks
//! resized by `mremap`) against glibc (`std`'s System allocator, whose
//! `realloc` also uses `mremap` for mmapped chunks).
//!
//! ```sh
//! cargo run --release --example grow              # 5 repetitions
//! cargo run --release --example grow -- --reps 3
//! ```
//!
//! Two growth patterns: `reserve_exact` (one reallocation per 4 KiB step,
//! 65,536 of them) and `extend` (amortized doubling, about 30). Each
//! (pattern, allocator, repetition) runs in a fresh child process, the
//! allocators interleaved; printed are medians of wall time and of minor
//! page faults (getrusage, whole process, first touch included).

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec as AVec;
use std::process::Command;
use std::time::Instant;

const TOTAL: usize = 256 << 20;
const STEP: usize = 4 << 10;

fn minor_faults() -> i64 {
    // SAFETY: getrusage writes only the struct we pass.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt
    }
}

/// Grows a vector to [`TOTAL`] bytes; returns a checksum so nothing is
/// optimized away.
fn grow<A: Allocator>(alloc: A, exact: bool) -> u64 {
    let chunk = [7u8; STEP];
    let mut v = AVec::<u8, A>::new_in(alloc);
    while v.len() < TOTAL {
        if exact {
            v.reserve_exact(STEP);
        }
        v.extend_from_slice(&chunk);
    }
    std::hint::black_box(&mut v);
    v.iter().step_by(STEP).map(|&b| b as u64).sum::<u64>() + v.capacity() as u64
}

/// One run in this process: prints "nanoseconds faults".
fn child(alloc: &str, exact: bool) {
    let f0 = minor_faults();
    let t0 = Instant::now();
    let sum = match alloc {
        "smallmid" => {
            let arena = smallmid::SmallMidArena::new();
            grow(&arena, exact)
        }
        "glibc" => grow(Global, exact),
        other => panic!("unknown allocator {other}"),
    };
    let ns = t0.elapsed().as_nanos();
    let faults = minor_faults() - f0;
    std::hint::black_box(sum);
    println!("{ns} {faults}");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], args[i + 2] == "exact");
        return;
    }
    let reps: usize = args
        .iter()
        .position(|a| a == "--reps")
        .map_or(5, |i| args[i + 1].parse().expect("--reps N"));
    let exe = std::env::current_exe().expect("own path");
    let allocs = ["smallmid", "glibc"];
    println!(
        "Vec<u8> grown {} KiB at a time to {} MiB, {reps} reps, medians\n",
        STEP >> 10,
        TOTAL >> 20
    );
    println!("| pattern | allocator | time (ms) | minor faults |");
    println!("|---|---|---:|---:|");
    for pattern in ["exact", "extend"] {
        let mut res: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); allocs.len()];
        for _ in 0..reps {
            for (k, alloc) in allocs.iter().enumerate() {
                let out = Command::new(&exe)
                    .args(["--child", alloc, pattern])
                    .output()
                    .expect("child run");
                assert!(out.status.success(), "{alloc} {pattern} failed");
                let line = String::from_utf8_lossy(&out.stdout);
                let mut it = line.split_whitespace().map(|x| x.parse::<f64>().unwrap());
                res[k].0.push(it.next().unwrap() / 1e6);
                res[k].1.push(it.next().unwrap());
            }
        }
        let name = if pattern == "exact" {
            "reserve_exact 4 KiB"
        } else {
            "extend (doubling)"
        };
        for (k, alloc) in allocs.iter().enumerate() {
            let (t, f) = res[k].clone();
            println!("| {name} | {alloc} | {:.1} | {:.0} |", median(t), median(f));
        }
    }
}
