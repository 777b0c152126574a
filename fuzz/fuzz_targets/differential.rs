//! Differential fuzzing of the arena against a model (see `ops.rs`).
#![no_main]

mod ops;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ops::run(data));
