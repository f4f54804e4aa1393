//! Helpers shared by the kernel test binaries (each `mod common;`s this file).
#![allow(dead_code)]

use senet_kernels::nn::blocked::{blk16_len, blk16_to_nchw, nchw_to_blk16};
use senet_kernels::{pool, Shape4};

/// float32 unit roundoff.
pub const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Deterministic xorshift values in [-1, 1).
pub struct Rng(pub u64);
impl Rng {
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
            })
            .collect()
    }
}

/// Runs `f` at thread counts 1, 2, 3, asserts bitwise-equal outputs, returns the first.
/// Restores the thread count.
pub fn same_for_thread_counts(f: impl Fn() -> Vec<f32>) -> Vec<f32> {
    let prev = pool::num_threads();
    let mut first: Option<Vec<f32>> = None;
    for t in [1, 2, 3] {
        pool::set_num_threads(t).unwrap();
        let y = f();
        match &first {
            None => first = Some(y),
            Some(y1) => assert!(
                y1.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                "result differs between 1 and {t} threads"
            ),
        }
    }
    pool::set_num_threads(prev).unwrap();
    first.unwrap()
}

/// NCHW → Blk16.
pub fn to_blk(x: &[f32], s: Shape4) -> Vec<f32> {
    let mut y = vec![f32::NAN; blk16_len(s)];
    nchw_to_blk16(x, s, &mut y);
    y
}

/// Blk16 → NCHW.
pub fn from_blk(x: &[f32], s: Shape4) -> Vec<f32> {
    let mut y = vec![f32::NAN; s.len().unwrap()];
    blk16_to_nchw(x, s, &mut y);
    y
}

/// Padding lanes (channels c..16·⌈c/16⌉) of a Blk16 tensor are all +0.0.
pub fn assert_zero_padding(x: &[f32], s: Shape4, what: &str) {
    let cb = s.c.div_ceil(16);
    for (i, &v) in x.iter().enumerate() {
        let (lane, blk) = (i % 16, (i / (16 * s.h * s.w)) % cb);
        if blk * 16 + lane >= s.c {
            assert_eq!(v.to_bits(), 0, "{what}: padding lane at {i} is {v}");
        }
    }
}

/// Asserts |got − want| ≤ 2(k+2)·u·Σ|terms| per element (`bound` holds Σ|terms|):
/// recursive summation of k products with two roundings per step, first order.
pub fn check_close(got: &[f32], want: &[f64], bound: &[f64], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol_factor = (2 * (k + 2)) as f64 * U;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let tol = tol_factor * b + 1e-30;
        assert!((g as f64 - w).abs() <= tol, "{what}: element {i}: got {g}, want {w} (tol {tol:e})");
    }
}
