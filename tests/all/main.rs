//! One integration-test binary, a module per area.

mod boxed;
mod collections;
mod limits;
mod mixed;
mod model;
mod recycle;
mod review;
mod servers;
mod shadow;
mod threads;

/// A small deterministic PRNG (xorshift64*), so failures replay.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Caps block sizes under miri, which interprets every byte written: the
/// large paths are still taken (spans start above 32 KiB), with less data.
pub const fn cap(size: usize) -> usize {
    if cfg!(miri) && size > (80 << 10) {
        (80 << 10) + size % 4096
    } else {
        size
    }
}

/// Scales iteration counts down under miri.
pub const fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        n / 1000 + 2
    } else {
        n
    }
}
