//! The `nn` ops against naive float64 references, on every SIMD level the CPU has, and
//! bitwise-identical across thread counts 1, 2, 3.

use senet_kernels::nn::{add_relu, global_avg_pool, linear, max_pool2d, pool_output_size};
use senet_kernels::{simd, Shape4};

mod common;
use common::*;

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

/// Each input's outputs are bit for bit the same alone or in a batch of any size (rows
/// run 4 at a time through one pass over the weights, plus single-row tails).
#[test]
fn linear_rows_do_not_depend_on_the_batch() {
    simd::for_each_level(|level| {
        for (i, &(n, cin, cout)) in [(9, 2048, 50), (5, 37, 11), (4, 100, 3), (7, 70, 9)].iter().enumerate() {
            let mut rng = Rng(350 + i as u64);
            let (x, wt, b) = (rng.vec(n * cin), rng.vec(cout * cin), rng.vec(cout));
            let mut y = vec![f32::NAN; n * cout];
            linear(&x, n, cin, &wt, &b, cout, &mut y);
            for r in 0..n {
                let mut one = vec![f32::NAN; cout];
                linear(&x[r * cin..(r + 1) * cin], 1, cin, &wt, &b, cout, &mut one);
                assert_eq!(one, y[r * cout..(r + 1) * cout], "{level:?} row {r} of {n}x{cin}->{cout}");
                let mut three = vec![f32::NAN; 3 * cout];
                let x3: Vec<f32> = (0..3).flat_map(|_| x[r * cin..(r + 1) * cin].iter().copied()).collect();
                linear(&x3, 3, cin, &wt, &b, cout, &mut three);
                assert_eq!(three[cout..2 * cout], y[r * cout..(r + 1) * cout], "{level:?} row {r} in a batch of 3");
            }
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
