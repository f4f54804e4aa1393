//! The `nn` ops against naive float64 references, on every SIMD level the CPU has, and
//! bitwise-identical across thread counts 1, 2, 3.

use senet_kernels::nn::{add_relu, global_avg_pool, linear, max_pool2d, pool_output_size, Conv2d};
use senet_kernels::{pool, simd, Shape4};

/// float32 unit roundoff.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Deterministic xorshift values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn vec(&mut self, n: usize) -> Vec<f32> {
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

/// Runs `f` at thread counts 1, 2, 3 and asserts the outputs are bitwise equal; returns
/// the first. Restores the thread count.
fn same_for_thread_counts(f: impl Fn() -> Vec<f32>) -> Vec<f32> {
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

#[derive(Clone, Copy, Debug)]
struct ConvCase {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    groups: usize,
}

#[allow(clippy::too_many_arguments)]
const fn cc(n: usize, cin: usize, h: usize, w: usize, cout: usize, kh: usize, kw: usize, stride: usize, pad: usize, groups: usize) -> ConvCase {
    ConvCase { n, cin, h, w, cout, kh, kw, stride, pad, groups }
}

const CONV_CASES: &[ConvCase] = &[
    cc(2, 5, 7, 9, 10, 1, 1, 1, 0, 1),     // 1×1 stride 1: plain GEMM, tails everywhere
    cc(2, 8, 9, 7, 12, 1, 1, 2, 0, 1),     // strided 1×1 downsample, odd sizes
    cc(1, 7, 11, 13, 9, 3, 3, 1, 1, 1),    // 3×3 / 1
    cc(2, 6, 13, 10, 17, 3, 3, 2, 1, 1),   // 3×3 / 2
    cc(1, 3, 23, 19, 8, 7, 7, 2, 3, 1),    // 7×7 / 2 stem
    cc(2, 8, 9, 11, 12, 3, 3, 1, 1, 4),    // grouped
    cc(1, 64, 10, 9, 64, 3, 3, 2, 1, 32),  // ResNeXt-like: 2 channels per group, stride 2
    cc(1, 16, 8, 8, 16, 3, 3, 1, 1, 16),   // depthwise
    cc(2, 16, 12, 70, 16, 3, 3, 2, 1, 4),  // grouped, stride 2 on a wide row
    cc(1, 6, 11, 13, 9, 5, 5, 3, 2, 3),    // grouped, 5×5, stride 3, pad 2
    cc(2, 32, 7, 7, 64, 3, 3, 1, 1, 4),    // grouped, narrow map: 8-channel blocks
    cc(1, 12, 7, 7, 30, 3, 3, 1, 1, 3),    // grouped, 10 channels per group: block tails
    cc(1, 64, 20, 21, 64, 3, 3, 1, 1, 32), // grouped, rows longer than 2 vectors, > 1 MFLOP
    cc(1, 4, 10, 12, 6, 5, 3, 3, 2, 1),    // kh ≠ kw, stride 3
    cc(1, 2, 4, 5, 3, 3, 3, 1, 2, 1),      // pad 2 > k/2: whole rows of padding
    cc(1, 40, 9, 9, 20, 3, 3, 1, 1, 1),    // K = 360: two K blocks
    cc(1, 300, 5, 6, 7, 1, 1, 1, 0, 1),    // K = 300 on the 1×1 path
    cc(2, 32, 40, 41, 70, 3, 3, 1, 1, 1),  // N = 1640: several column blocks, > 1 MFLOP
    cc(1, 24, 7, 7, 300, 1, 1, 1, 0, 1),   // M = 300: several row blocks
    cc(3, 16, 15, 17, 24, 1, 1, 2, 0, 1),  // batch 3, strided 1×1
    cc(1, 3, 193, 161, 4, 7, 7, 2, 3, 1),  // odd large input through the stem
    cc(5, 8, 3, 3, 9, 3, 3, 2, 0, 1),      // 1×1 output: many images per column panel
    cc(6, 6, 4, 4, 10, 1, 1, 2, 0, 1),     // 2×2 output, strided 1×1: tiles span images
    cc(8, 64, 7, 7, 40, 1, 1, 1, 0, 1),    // 7×7 batch 8 on the 1×1 path: tiles span images
];

/// Returns (y, bound): the float64 result and Σ|terms| per output, for the tolerance.
fn conv_ref(c: &ConvCase, x: &[f32], wt: &[f32], b: &[f32], res: Option<&[f32]>, relu: bool) -> (Vec<f64>, Vec<f64>) {
    let oh = (c.h + 2 * c.pad - c.kh) / c.stride + 1;
    let ow = (c.w + 2 * c.pad - c.kw) / c.stride + 1;
    let (cig, cog) = (c.cin / c.groups, c.cout / c.groups);
    let mut y = vec![0.0; c.n * c.cout * oh * ow];
    let mut bound = vec![0.0; y.len()];
    for n in 0..c.n {
        for co in 0..c.cout {
            let g = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = b[co] as f64;
                    let mut a = s.abs();
                    for ci in 0..cig {
                        for ky in 0..c.kh {
                            for kx in 0..c.kw {
                                let iy = (oy * c.stride + ky) as isize - c.pad as isize;
                                let ix = (ox * c.stride + kx) as isize - c.pad as isize;
                                if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize {
                                    continue;
                                }
                                let xv = x[((n * c.cin + g * cig + ci) * c.h + iy as usize) * c.w + ix as usize] as f64;
                                let wv = wt[((co * cig + ci) * c.kh + ky) * c.kw + kx] as f64;
                                s += xv * wv;
                                a += (xv * wv).abs();
                            }
                        }
                    }
                    let i = ((n * c.cout + co) * oh + oy) * ow + ox;
                    if let Some(r) = res {
                        s += r[i] as f64;
                        a += (r[i] as f64).abs();
                    }
                    y[i] = if relu { s.max(0.0) } else { s };
                    bound[i] = a;
                }
            }
        }
    }
    (y, bound)
}

/// Float32 accumulation of K products plus bias and residual: each step rounds at most
/// twice (the scalar kernel rounds product and sum separately), so the error is at most
/// (2·(K + 2))·u·Σ|terms| (the classic γ_n bound of recursive summation, to first
/// order). ReLU is 1-Lipschitz and does not increase it.
fn check_close(got: &[f32], want: &[f64], bound: &[f64], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol_factor = (2 * (k + 2)) as f64 * U;
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let tol = tol_factor * b + 1e-30;
        assert!((g as f64 - w).abs() <= tol, "{what}: element {i}: got {g}, want {w} (tol {tol:e})");
    }
}

fn conv_case(c: &ConvCase, seed: u64, prebuilt: Option<&Conv2d>) {
    let mut rng = Rng(seed);
    let cig = c.cin / c.groups;
    let x = rng.vec(c.n * c.cin * c.h * c.w);
    let wt = rng.vec(c.cout * cig * c.kh * c.kw);
    let b = rng.vec(c.cout);
    let own;
    let conv = match prebuilt {
        Some(p) => p,
        None => {
            own = Conv2d::new(&wt, &b, c.cin, c.cout, c.kh, c.kw, c.stride, c.pad, c.groups);
            &own
        }
    };
    let (oh, ow) = conv.output_hw(c.h, c.w).unwrap();
    let ylen = c.n * c.cout * oh * ow;
    let res = rng.vec(ylen);
    let xs = Shape4::new(c.n, c.cin, c.h, c.w);
    for (with_res, relu) in [(false, false), (false, true), (true, false), (true, true)] {
        let r = with_res.then_some(&res[..]);
        let y = same_for_thread_counts(|| {
            // Garbage in y: run must overwrite every element.
            let mut y = vec![f32::NAN; ylen];
            conv.run(&x, xs, &mut y, r, relu);
            y
        });
        let (want, bound) = conv_ref(c, &x, &wt, &b, r, relu);
        let what = format!("{c:?} res={with_res} relu={relu} level={:?}", simd::level());
        check_close(&y, &want, &bound, cig * c.kh * c.kw, &what);
    }
}

#[test]
fn conv2d_matches_reference_on_every_level() {
    simd::for_each_level(|_| {
        for (i, c) in CONV_CASES.iter().enumerate() {
            conv_case(c, 0x9e37_79b9 + i as u64, None);
        }
    });
}

/// Weights packed at one level (the best) and run at every other one: exercises the
/// derived packings.
#[test]
fn conv2d_packed_once_runs_on_every_level() {
    let c = cc(2, 12, 9, 10, 20, 3, 3, 1, 1, 2);
    let mut rng = Rng(7);
    let _x = rng.vec(c.n * c.cin * c.h * c.w);
    let wt = rng.vec(c.cout * (c.cin / c.groups) * 9);
    let b = rng.vec(c.cout);
    let conv = {
        let _g = simd::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        Conv2d::new(&wt, &b, c.cin, c.cout, c.kh, c.kw, c.stride, c.pad, c.groups)
    };
    simd::for_each_level(|_| {
        // Same seed as the weights above, so conv_case regenerates identical weights.
        conv_case(&c, 7, Some(&conv));
    });
}

#[test]
fn conv2d_output_hw() {
    let conv = Conv2d::new(&[0.0; 64 * 3 * 49], &[0.0; 64], 3, 64, 7, 7, 2, 3, 1);
    assert_eq!(conv.output_hw(224, 224), Some((112, 112)));
    assert_eq!(conv.output_hw(193, 161), Some((97, 81)));
    assert_eq!(conv.output_hw(0, 0), None);
}

fn maxpool_ref(x: &[f32], s: Shape4, k: usize, st: usize, pad: usize, oh: usize, ow: usize) -> Vec<f32> {
    let mut y = vec![f32::NEG_INFINITY; s.n * s.c * oh * ow];
    for p in 0..s.n * s.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * st + ky) as isize - pad as isize;
                        let ix = (ox * st + kx) as isize - pad as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w {
                            m = m.max(x[(p * s.h + iy as usize) * s.w + ix as usize]);
                        }
                    }
                }
                y[(p * oh + oy) * ow + ox] = m;
            }
        }
    }
    y
}

#[test]
fn pool_output_size_follows_pytorch() {
    assert_eq!(pool_output_size(112, 3, 2, 1, false), Some(56));
    assert_eq!(pool_output_size(112, 3, 2, 0, true), Some(56)); // senet154 stem pool
    assert_eq!(pool_output_size(7, 2, 2, 0, false), Some(3));
    assert_eq!(pool_output_size(7, 2, 2, 0, true), Some(4));
    // ceil would give 4, but the last window would start in the padding: dropped.
    assert_eq!(pool_output_size(5, 2, 2, 1, true), Some(3));
    assert_eq!(pool_output_size(1, 3, 2, 0, false), None);
}

#[test]
fn max_pool2d_matches_reference() {
    // (n, c, h, w, k, stride, pad, ceil)
    let cases = [
        (2, 3, 112 / 4, 112 / 4, 3, 2, 1, false),
        (1, 4, 13, 11, 3, 2, 1, false),
        (1, 4, 13, 11, 3, 2, 0, true),
        (2, 2, 7, 9, 2, 2, 0, true),
        (1, 3, 5, 5, 2, 2, 1, true),
        (1, 2, 9, 6, 3, 1, 1, false),
        (1, 2, 10, 10, 3, 3, 1, true),
        (2, 64, 40, 37, 3, 2, 1, true), // large enough to run in parallel
    ];
    simd::for_each_level(|l| {
        for (i, &(n, c, h, w, k, st, pad, ceil)) in cases.iter().enumerate() {
            let s = Shape4::new(n, c, h, w);
            let x = Rng(100 + i as u64).vec(s.len().unwrap());
            let oh = pool_output_size(h, k, st, pad, ceil).unwrap();
            let ow = pool_output_size(w, k, st, pad, ceil).unwrap();
            let y = same_for_thread_counts(|| {
                let mut y = vec![f32::NAN; n * c * oh * ow];
                max_pool2d(&x, s, k, st, pad, ceil, &mut y);
                y
            });
            // Max is exact: bitwise equality.
            assert_eq!(y, maxpool_ref(&x, s, k, st, pad, oh, ow), "case {i} level {l:?}");
        }
    });
}

#[test]
fn global_avg_pool_matches_reference() {
    simd::for_each_level(|_| {
        for (i, &(n, c, h, w)) in [(1, 3, 7, 7), (2, 5, 1, 1), (2, 300, 13, 11), (1, 2, 193, 161)].iter().enumerate() {
            let s = Shape4::new(n, c, h, w);
            let x = Rng(200 + i as u64).vec(s.len().unwrap());
            let y = same_for_thread_counts(|| {
                let mut y = vec![f32::NAN; n * c];
                global_avg_pool(&x, s, &mut y);
                y
            });
            for p in 0..n * c {
                let want = x[p * h * w..(p + 1) * h * w].iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
                let bound = x[p * h * w..(p + 1) * h * w].iter().map(|&v| (v as f64).abs()).sum::<f64>() / (h * w) as f64;
                // float64 sums: only the final rounding to f32 (half an ulp of the mean)
                // plus float64 error (≤ hw·2^-53 relative to Σ|x|) remain.
                assert!((y[p] as f64 - want).abs() <= U * want.abs() + 1e-12 * bound, "plane {p}");
            }
        }
    });
}

#[test]
fn linear_matches_reference() {
    simd::for_each_level(|_| {
        for (i, &(n, cin, cout)) in [(1, 3, 2), (2, 37, 11), (8, 2048, 100), (3, 100, 1000)].iter().enumerate() {
            let mut rng = Rng(300 + i as u64);
            let (x, wt, b) = (rng.vec(n * cin), rng.vec(cout * cin), rng.vec(cout));
            let y = same_for_thread_counts(|| {
                let mut y = vec![f32::NAN; n * cout];
                linear(&x, n, cin, &wt, &b, cout, &mut y);
                y
            });
            let mut want = vec![0.0f64; n * cout];
            let mut bound = vec![0.0f64; n * cout];
            for r in 0..n {
                for o in 0..cout {
                    let mut s = b[o] as f64;
                    let mut a = s.abs();
                    for j in 0..cin {
                        let t = x[r * cin + j] as f64 * wt[o * cin + j] as f64;
                        s += t;
                        a += t.abs();
                    }
                    want[r * cout + o] = s;
                    bound[r * cout + o] = a;
                }
            }
            check_close(&y, &want, &bound, cin, &format!("linear {n}x{cin}->{cout}"));
        }
    });
}

#[test]
fn add_relu_is_exact() {
    simd::for_each_level(|_| {
        for (i, &len) in [0usize, 1, 17, 1000, 200_003].iter().enumerate() {
            let mut rng = Rng(400 + i as u64);
            let (a, b) = (rng.vec(len), rng.vec(len));
            for relu in [false, true] {
                let y = same_for_thread_counts(|| {
                    let mut y = vec![f32::NAN; len];
                    add_relu(&a, &b, &mut y, relu);
                    y
                });
                for j in 0..len {
                    // f32 addition is correctly rounded: exact agreement.
                    let s = a[j] + b[j];
                    assert_eq!(y[j], if relu { s.max(0.0) } else { s });
                }
            }
        }
    });
}
