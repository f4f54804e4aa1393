//! SE kernels against float64 references, on every SIMD level the CPU has, plus
//! thread-count determinism and the in-place forms.

use senet_kernels::se::{self, ScaleIo, SeWeights};
use senet_kernels::{pool, simd, Layout, Shape4};

/// Deterministic pseudo-random floats in [-1, 1) (xorshift; no dependency).
fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn idx(layout: Layout, s: Shape4, n: usize, c: usize, p: usize) -> usize {
    match layout {
        Layout::Nchw => (n * s.c + c) * s.hw() + p,
        Layout::Nhwc => (n * s.hw() + p) * s.c + c,
    }
}

fn ref_squeeze(x: &[f32], s: Shape4, layout: Layout) -> Vec<f64> {
    let mut z = vec![0.0; s.n * s.c];
    for n in 0..s.n {
        for c in 0..s.c {
            let sum: f64 = (0..s.hw()).map(|p| x[idx(layout, s, n, c, p)] as f64).sum();
            z[n * s.c + c] = sum / s.hw() as f64;
        }
    }
    z
}

fn ref_excite(z: &[f64], n: usize, w: &SeWeights) -> Vec<f64> {
    let (c, cr) = (w.c, w.cr);
    let mut g = vec![0.0; n * c];
    for s in 0..n {
        let h: Vec<f64> = (0..cr)
            .map(|j| {
                let v: f64 = (0..c).map(|i| w.w1[j * c + i] as f64 * z[s * c + i]).sum();
                (v + w.b1.map_or(0.0, |b| b[j] as f64)).max(0.0)
            })
            .collect();
        for i in 0..c {
            let v: f64 = (0..cr).map(|j| w.w2[i * cr + j] as f64 * h[j]).sum();
            let v = v + w.b2.map_or(0.0, |b| b[i] as f64);
            g[s * c + i] = 1.0 / (1.0 + (-v).exp());
        }
    }
    g
}

fn ref_scale(x: &[f32], s: Shape4, layout: Layout, g: &[f64], r: Option<&[f32]>, relu: bool) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for n in 0..s.n {
        for c in 0..s.c {
            for p in 0..s.hw() {
                let i = idx(layout, s, n, c, p);
                let mut v = x[i] as f64 * g[n * s.c + c] + r.map_or(0.0, |r| r[i] as f64);
                if relu {
                    v = v.max(0.0);
                }
                y[i] = v;
            }
        }
    }
    y
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max)
}

struct Case {
    s: Shape4,
    x: Vec<f32>,
    r: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    cr: usize,
}

fn case(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Case {
    let s = Shape4::new(n, c, h, w);
    let cr = (c / 16).max(1);
    let len = s.len().unwrap();
    // Inputs offset from zero so that squeeze means are not ~0 (relative checks bite).
    let x: Vec<f32> = rand_vec(len, seed).iter().map(|v| v + 0.25).collect();
    // Weights scaled like PyTorch's default init (±1/sqrt(fan_in)).
    let sc1 = 1.0 / (c as f32).sqrt();
    let sc2 = 1.0 / (cr as f32).sqrt();
    Case {
        s,
        r: rand_vec(len, seed + 1),
        w1: rand_vec(cr * c, seed + 2).iter().map(|v| v * sc1 * 4.0).collect(),
        b1: rand_vec(cr, seed + 3).iter().map(|v| v * sc1).collect(),
        w2: rand_vec(c * cr, seed + 4).iter().map(|v| v * sc2 * 4.0).collect(),
        b2: rand_vec(c, seed + 5).iter().map(|v| v * sc2).collect(),
        x,
        cr,
    }
}

impl Case {
    fn weights(&self, bias: bool) -> SeWeights<'_> {
        SeWeights::new(
            &self.w1,
            bias.then_some(&self.b1[..]),
            &self.w2,
            bias.then_some(&self.b2[..]),
            self.s.c,
            self.cr,
        )
        .unwrap()
    }
}

const SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 64, 1, 1),
    (3, 72, 7, 7),
    (1, 256, 13, 17),
    (2, 64, 56, 56),
    (8, 2048, 7, 7),
    (3, 72, 1, 1),
    (1, 3, 5, 3),
];

/// Tolerances, justified:
/// - squeeze: the kernel sums ≤16 values per f32 lane before going to f64, so its error is
///   a few f32 ulps of the partial sums: 1e-6 relative to mean |x| is ~8 ulps;
/// - gates: sigmoid outputs in (0,1); error from f32 dots of length ≤ 2048 (~1e-6
///   relative to Σ|w·z|) and the vector exp (< 3e-7 rel) stays below 5e-6 absolute;
/// - scale: x·g (+r) with |x|,|r| ≤ 1.25 and gate error ≤ 5e-6 gives ≤ 1e-5.
#[test]
fn se_kernels_match_f64_reference_on_every_level() {
    simd::for_each_level(|level| {
        for (k, &(n, c, h, w)) in SHAPES.iter().enumerate() {
            let cs = case(n, c, h, w, 17 + k as u64);
            for layout in [Layout::Nchw, Layout::Nhwc] {
                let zr = ref_squeeze(&cs.x, cs.s, layout);
                let mut z = vec![0.0f32; n * c];
                se::squeeze(&cs.x, cs.s, layout, &mut z);
                let mean_abs = cs.x.iter().map(|v| v.abs() as f64).sum::<f64>() / cs.x.len() as f64;
                let dz = max_abs_diff(&z, &zr);
                assert!(dz <= 1e-6 * mean_abs, "{level:?} {layout:?} {:?}: squeeze err {dz}", cs.s);

                for bias in [false, true] {
                    let wts = cs.weights(bias);
                    let gr = ref_excite(&zr, n, &wts);
                    let mut g = vec![0.0f32; n * c];
                    se::excite(&z, n, &wts, &mut g);
                    let dg = max_abs_diff(&g, &gr);
                    assert!(dg <= 5e-6, "{level:?} {:?} bias={bias}: gates err {dg}", cs.s);

                    for (res, relu) in [(false, false), (true, false), (false, true), (true, true)] {
                        let r = res.then_some(&cs.r[..]);
                        let yr = ref_scale(&cs.x, cs.s, layout, &gr, r, relu);
                        let mut y = vec![f32::NAN; cs.x.len()];
                        se::scale(ScaleIo::Out { x: &cs.x, residual: r, out: &mut y }, cs.s, layout, &g, relu);
                        let dy = max_abs_diff(&y, &yr);
                        assert!(dy <= 1e-5, "{level:?} {layout:?} {:?} scale err {dy}", cs.s);

                        let mut y2 = vec![f32::NAN; cs.x.len()];
                        se::se_block(ScaleIo::Out { x: &cs.x, residual: r, out: &mut y2 }, cs.s, layout, &wts, relu);
                        let dy = max_abs_diff(&y2, &yr);
                        assert!(dy <= 1e-5, "{level:?} {layout:?} {:?} se_block err {dy}", cs.s);
                    }
                }
            }
        }
    });
}

#[test]
fn in_place_forms_equal_out_of_place() {
    simd::for_each_level(|_| {
        let cs = case(2, 72, 13, 17, 5);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let wts = cs.weights(true);
            let mut want = vec![0.0f32; cs.x.len()];
            se::se_block(ScaleIo::Out { x: &cs.x, residual: Some(&cs.r), out: &mut want }, cs.s, layout, &wts, true);
            let mut xy = cs.x.clone();
            se::se_block(ScaleIo::InPlace { xy: &mut xy, residual: Some(&cs.r) }, cs.s, layout, &wts, true);
            assert_eq!(xy, want);
            let mut ry = cs.r.clone();
            se::se_block(ScaleIo::IntoResidual { x: &cs.x, ry: &mut ry }, cs.s, layout, &wts, true);
            assert_eq!(ry, want);
        }
    });
}

#[test]
fn results_are_bitwise_identical_for_any_thread_count() {
    let _g = simd::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let prev = pool::num_threads();
    for &(n, c, h, w) in &[(8, 256, 56, 56), (3, 2048, 7, 7), (1, 256, 56, 56)] {
        let cs = case(n, c, h, w, 99);
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let wts = cs.weights(true);
            let mut outs = Vec::new();
            for t in [1, 2, 3] {
                pool::set_num_threads(t).unwrap();
                let mut y = vec![0.0f32; cs.x.len()];
                se::se_block(ScaleIo::Out { x: &cs.x, residual: Some(&cs.r), out: &mut y }, cs.s, layout, &wts, true);
                let mut z = vec![0.0f32; n * c];
                se::squeeze(&cs.x, cs.s, layout, &mut z);
                outs.push((y, z));
            }
            for o in &outs[1..] {
                assert!(o.0.iter().zip(&outs[0].0).all(|(a, b)| a.to_bits() == b.to_bits()));
                assert!(o.1.iter().zip(&outs[0].1).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
    pool::set_num_threads(prev).unwrap();
}

#[test]
fn squeeze_of_large_plane_loses_no_accuracy() {
    // 56×56 planes of values near 1e3 plus small noise: a naive f32 running sum drifts by
    // ~1e-4 relative; the blocked sum stays within a few ulps of the float64 mean.
    simd::for_each_level(|level| {
        let s = Shape4::new(1, 4, 56, 56);
        let x: Vec<f32> = rand_vec(s.len().unwrap(), 3).iter().map(|v| 1000.0 + v).collect();
        let mut z = vec![0.0f32; 4];
        se::squeeze(&x, s, Layout::Nchw, &mut z);
        let zr = ref_squeeze(&x, s, Layout::Nchw);
        for (a, b) in z.iter().zip(&zr) {
            assert!(((*a as f64) - b).abs() / b <= 2.0 * f32::EPSILON as f64, "{level:?}: {a} vs {b}");
        }
    });
}

#[test]
fn weights_are_validated() {
    let w = vec![0.0f32; 8];
    assert!(SeWeights::new(&w, None, &w, None, 4, 2).is_ok());
    assert!(SeWeights::new(&w, None, &w[..7], None, 4, 2).is_err());
    assert!(SeWeights::new(&w, Some(&w[..3]), &w, None, 4, 2).is_err());
    assert!(SeWeights::new(&w, None, &w, Some(&w[..3]), 4, 2).is_err());
    assert!(SeWeights::new(&w, None, &w, None, 0, 2).is_err());
}

/// Outputs of 16 MiB and more take the non-temporal store path (with an unaligned head):
/// same results as the reference, out of place and in place, on every level.
#[test]
fn streaming_outputs_match_reference() {
    simd::for_each_level(|level| {
        let cs = case(4, 257, 64, 64, 11); // 16.8 MB; planes of 4096, odd channel count
        let wts = cs.weights(true);
        let layout = Layout::Nchw;
        let zr = ref_squeeze(&cs.x, cs.s, layout);
        let gr = ref_excite(&zr, cs.s.n, &wts);
        let yr = ref_scale(&cs.x, cs.s, layout, &gr, Some(&cs.r), true);
        // An output starting 1 float past a vector boundary exercises the scalar head.
        let mut buf = vec![f32::NAN; cs.x.len() + 1];
        se::se_block(ScaleIo::Out { x: &cs.x, residual: Some(&cs.r), out: &mut buf[1..] }, cs.s, layout, &wts, true);
        assert!(max_abs_diff(&buf[1..], &yr) <= 1e-5, "{level:?} out of place");
        let mut xy = cs.x.clone();
        se::se_block(ScaleIo::InPlace { xy: &mut xy, residual: Some(&cs.r) }, cs.s, layout, &wts, true);
        assert!(max_abs_diff(&xy, &yr) <= 1e-5, "{level:?} in place");
    });
}

/// The excitation of a sample is bitwise the same alone or in a batch of any size, on
/// every level: batches run four samples per pass over a weight row, with per sample the
/// dot product's exact order of a single sample (a one-chain-per-sample variant once
/// made seresnet50's batch-8 logits differ from batch-1 ones in the last bits; the
/// channel counts here reach the four-accumulator loop and the tails).
#[test]
fn excitation_is_the_same_alone_or_in_a_batch() {
    for &(c, cr) in &[(200, 20), (2048, 128), (64, 16), (33, 5)] {
        let seed = 0xe7c1 + c as u64;
        let (w1, b1, w2, b2) = (rand_vec(cr * c, seed), rand_vec(cr, seed + 1), rand_vec(c * cr, seed + 2), rand_vec(c, seed + 3));
        let w = SeWeights::new(&w1, Some(&b1), &w2, Some(&b2), c, cr).unwrap();
        let n = 7;
        let z = rand_vec(n * c, seed + 4);
        simd::for_each_level(|level| {
            let mut g = vec![0.0f32; n * c];
            se::excite(&z, n, &w, &mut g);
            for s in 0..n {
                let mut g1 = vec![0.0f32; c];
                se::excite(&z[s * c..(s + 1) * c], 1, &w, &mut g1);
                let same = g1.iter().zip(&g[s * c..(s + 1) * c]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{level:?} c={c}: sample {s} of a batch of {n} differs from it alone");
            }
        });
    }
}
