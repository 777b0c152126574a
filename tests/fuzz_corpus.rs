//! Replays the committed fuzz corpus on stable (`fuzz/corpus/differential`).

#[path = "../fuzz/fuzz_targets/ops.rs"]
mod ops;

#[test]
fn replay_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/differential");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        ops::run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 8, "corpus at {} has only {n} inputs", dir.display());
}
