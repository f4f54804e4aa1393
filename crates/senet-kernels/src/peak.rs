//! Peak float32 multiply-add throughput of the running machine, measured: the ceiling
//! that model benchmarks report their GFLOP/s against ("fraction of peak").
//!
//! Every pool thread runs a register-only loop of independent `mul_add` chains at the
//! current SIMD level. An FMA has a latency of ~4 cycles and (on AVX-512 server cores and
//! on AMD Zen) two issue ports, so at least 2 × 4 = 8 independent chains are needed to
//! keep both ports busy. The chains and the loop's two constants must all stay in
//! registers: 16 chains with AVX-512's 32 registers, 12 with AVX2's 16 (16 chains there
//! spill to the stack, and the loop measured 55 instead of ~100 GFLOP/s on a Zen 3 core;
//! see [`chains`]). Nothing touches memory, so the number is the arithmetic ceiling, not
//! what any real kernel can reach (a tuned GEMM gets 60–80 % of it).

use crate::pool;
use crate::simd::{self, SimdLevel};
use crate::vec::{simd_dispatch, Vf32};
use std::time::{Duration, Instant};

/// Independent accumulator chains per thread for vectors of `lanes` floats (see the
/// module docs): as many as fit the vector registers beside the loop's two constants,
/// 16 for the 512-bit vectors, 12 for the others (the scalar and NEON loops have
/// registers to spare; 12 chains are still more than their FMA latency × ports).
const fn chains_for_lanes(lanes: usize) -> usize {
    if lanes == 16 {
        16
    } else {
        12
    }
}

/// f32 lanes of `level`'s vectors.
fn lanes(level: SimdLevel) -> usize {
    match level {
        SimdLevel::Avx512 => 16,
        SimdLevel::Avx2 => 8,
        SimdLevel::Neon => 4,
        SimdLevel::Scalar => 1,
    }
}

/// Independent accumulator chains per thread at `level`.
pub fn chains(level: SimdLevel) -> usize {
    chains_for_lanes(lanes(level))
}

/// Loop iterations between two clock reads: 4096 × 12–16 FMAs ≈ 10 µs on one core,
/// long enough that `Instant::now` costs nothing, short enough to stop on time.
const ITERS_PER_CHECK: usize = 4096;

/// `acc ← acc·a + b` on `N` independent vectors, `iters` times; returns a lane sum
/// so the work cannot be optimised away. With `a` just below 1 the values converge to
/// `b / (1 − a)` and never overflow or become denormal, whatever `iters` is.
///
/// # Safety
/// `V`'s instructions must be supported by the running CPU (guaranteed by `simd_dispatch!`).
#[inline(always)]
unsafe fn fma_chains_n<V: Vf32, const N: usize>(seed: f32, a: f32, b: f32, iters: usize) -> f32 {
    let (va, vb) = (V::splat(a), V::splat(b));
    let mut acc = [V::splat(seed); N];
    for (i, x) in acc.iter_mut().enumerate() {
        *x = V::splat(seed + i as f32 * 1e-3);
    }
    for _ in 0..iters {
        // A fixed-size inner loop over an array held in registers: fully unrolled, one
        // FMA per chain per iteration, no loads or stores.
        for x in acc.iter_mut() {
            *x = x.mul_add(va, vb);
        }
    }
    let mut s = V::zero();
    for x in acc {
        s = s.add(x);
    }
    s.reduce_add()
}

/// [`fma_chains_n`] with [`chains_for_lanes`]`(V::LANES)` chains.
#[inline(always)]
unsafe fn fma_chains<V: Vf32>(seed: f32, a: f32, b: f32, iters: usize) -> f32 {
    match chains_for_lanes(V::LANES) {
        16 => fma_chains_n::<V, 16>(seed, a, b, iters),
        _ => fma_chains_n::<V, 12>(seed, a, b, iters),
    }
}

simd_dispatch!(
    /// [`fma_chains`] at `level`.
    fn fma_chains_at(seed: f32, a: f32, b: f32, iters: usize) -> f32 => fma_chains
);

/// Floating-point operations (a multiply-add counts as 2) of one `fma_chains` iteration.
fn flops_per_iter(level: SimdLevel) -> f64 {
    (2 * chains(level) * lanes(level)) as f64
}

/// One thread's run: FMA loop until `duration` has passed; returns its GFLOP/s.
fn run_one(level: SimdLevel, duration: Duration) -> f64 {
    let seed = std::hint::black_box(0.5f32);
    let (a, b) = (std::hint::black_box(0.999_99f32), std::hint::black_box(1e-6f32));
    let t0 = Instant::now();
    let mut iters = 0usize;
    let mut sink = 0.0f32;
    loop {
        // black_box per call: the call is pure, and with loop-invariant arguments the
        // compiler would hoist it out of the loop and run it once.
        sink += fma_chains_at(level, std::hint::black_box(seed), a, b, std::hint::black_box(ITERS_PER_CHECK));
        iters += ITERS_PER_CHECK;
        if t0.elapsed() >= duration {
            break;
        }
    }
    std::hint::black_box(sink);
    let secs = t0.elapsed().as_secs_f64();
    iters as f64 * flops_per_iter(level) / secs / 1e9
}

/// The result of [`measure`].
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// Sum over the pool's threads of each thread's multiply-add rate, in GFLOP/s (2 per FMA).
    pub gflops: f64,
    /// Threads that ran (the pool's size).
    pub threads: usize,
    /// The SIMD level the loop ran at ([`simd::level`]).
    pub level: SimdLevel,
}

/// Runs the FMA loop on every thread of the kernel pool at once for `duration` and
/// returns the total rate. Summing per-thread rates (rather than dividing by the wall
/// time) keeps a thread that starts late from counting as idle time; a thread that
/// shares its core with another process still measures low, which is what a benchmark
/// on a busy machine should see.
pub fn measure(duration: Duration) -> Peak {
    let level = simd::level();
    let rates: Vec<f64> = pool::install(|| rayon::broadcast(|_| run_one(level, duration)));
    Peak { gflops: rates.iter().sum(), threads: rates.len(), level }
}

/// The layer [`layer_probe`] runs: 1×1 convolution, 1024 → 256 channels, 14×14 map,
/// batch 1 (SE-ResNet-50's third-stage conv1).
pub const PROBE_CIN: usize = 1024;
pub const PROBE_COUT: usize = 256;
pub const PROBE_HW: usize = 14;

/// Floating-point operations of one [`layer_probe`] run (2 per multiply-add).
pub const PROBE_FLOP: f64 = (2 * PROBE_CIN * PROBE_COUT * PROBE_HW * PROBE_HW) as f64;

/// A cache-sensitive companion to [`measure`]: the GFLOP/s of one real layer whose
/// working set fills a core's L2 (1 MiB of packed weights, 0.8 MB of input; see
/// [`PROBE_CIN`]), run back to back on the kernel pool for about `duration`: the median
/// run's, so that the number describes the whole interval (a best-of would report the
/// one quiet moment of a contended interval).
///
/// [`measure`] touches no memory, so a host whose cores' caches are shared with another
/// tenant (SMT siblings) can show its full FMA peak while every real kernel runs up to 2×
/// slower; this layer, which on a quiet Xeon runs at ~80% of that peak, drops with them.
/// A benchmark reports both, so that a reader can tell a contended run.
pub fn layer_probe(duration: Duration) -> f64 {
    use crate::aligned::Aligned;
    use crate::nn::blocked::{blk16_len, ConvBlk};
    use crate::Shape4;
    static LAYER: std::sync::OnceLock<ConvBlk> = std::sync::OnceLock::new();
    let conv = LAYER.get_or_init(|| {
        let w: Vec<f32> = (0..PROBE_COUT * PROBE_CIN).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        ConvBlk::new(&w, &vec![0.1; PROBE_COUT], PROBE_CIN, PROBE_COUT, 1, 1, 1, 0, 1)
    });
    let xs = Shape4::new(1, PROBE_CIN, PROBE_HW, PROBE_HW);
    let mut x = Aligned::zeroed(blk16_len(xs));
    for (i, v) in x.as_mut_slice().iter_mut().enumerate() {
        *v = ((i * 31) % 997) as f32 * 1e-3;
    }
    let mut y = Aligned::zeroed(blk16_len(Shape4::new(1, PROBE_COUT, PROBE_HW, PROBE_HW)));
    let t0 = Instant::now();
    let mut times = Vec::new();
    // One warm-up run (packing, caches), then timed runs until `duration` has passed.
    for run in 0.. {
        let t = Instant::now();
        conv.run(x.as_slice(), xs, y.as_mut_slice(), None, true);
        if run > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
        if run > 0 && t0.elapsed() >= duration {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    PROBE_FLOP / times[times.len() / 2] / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level computes the same recurrence (to float32 rounding) as float64.
    #[test]
    fn fma_chains_match_f64_on_every_level() {
        simd::for_each_level(|l| {
            let (seed, a, b, n) = (0.5f32, 0.999f32, 1e-3f32, 5000usize);
            let got = fma_chains_at(l, seed, a, b, n) as f64;
            let lanes = (flops_per_iter(l) / (2 * chains(l)) as f64) as usize;
            let mut want = 0.0f64;
            for i in 0..chains(l) {
                let mut x = (seed + i as f32 * 1e-3) as f64;
                for _ in 0..n {
                    x = x * a as f64 + b as f64;
                }
                want += x * lanes as f64;
            }
            assert!((got - want).abs() <= 1e-4 * want.abs(), "{l:?}: {got} vs {want}");
        });
    }

    #[test]
    fn measure_reports_every_thread_and_a_positive_rate() {
        let p = measure(Duration::from_millis(20));
        assert_eq!(p.threads, pool::num_threads());
        assert!(p.gflops > 0.0 && p.gflops.is_finite(), "{p:?}");
    }

    #[test]
    fn layer_probe_reports_a_positive_rate_below_a_physical_bound() {
        let g = layer_probe(Duration::from_millis(20));
        // Positive and finite, and not absurd: below 4 TFLOP/s per thread (no CPU core
        // does 16 AVX-512 FMAs per cycle at 8 GHz), so the timing measured real work.
        assert!(g > 0.0 && g < 4000.0 * pool::num_threads() as f64, "{g}");
    }
}
