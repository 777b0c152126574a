//! Replays a fuzz corpus directory and reports inputs per second (to size
//! the fuzz target's cost per input): `cargo run --release --example
//! fuzz_replay -- target/fuzz-corpus`.
#[path = "../fuzz/fuzz_targets/ops.rs"]
mod ops;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/differential".into());
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let t = std::time::Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < 3.0 {
        for i in &inputs {
            ops::run(i);
            n += 1;
        }
    }
    println!(
        "{} inputs from {dir}: {:.0} inputs/s",
        inputs.len(),
        n as f64 / t.elapsed().as_secs_f64()
    );
}
