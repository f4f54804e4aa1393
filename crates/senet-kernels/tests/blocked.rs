//! The Blk16 ops (`nn::blocked`) against naive float64 references, on every SIMD level
//! the CPU has, and bitwise identical across thread counts 1, 2, 3.

use senet_kernels::nn::blocked::{
    blk16_len, global_avg_pool_blk16, max_pool2d_blk16, se_block_blk16, se_scale_blk16,
    set_l2_bytes, squeeze_blk16, ConvBlk,
};
use senet_kernels::nn::pool_output_size;
use senet_kernels::se::{ScaleIo, SeWeights};
use senet_kernels::{simd, Shape4};

mod common;
use common::*;


#[test]
fn blk16_conversions_round_trip() {
    for (i, &(n, c, h, w)) in [(1, 3, 5, 7), (2, 16, 4, 4), (2, 40, 9, 11), (3, 64, 33, 31), (1, 1, 1, 1)].iter().enumerate() {
        let s = Shape4::new(n, c, h, w);
        let x = Rng(10 + i as u64).vec(s.len().unwrap());
        let b = same_for_thread_counts(|| to_blk(&x, s));
        for nn in 0..n {
            for ch in 0..c {
                for p in 0..h * w {
                    let blk = (((nn * c.div_ceil(16) + ch / 16) * h * w) + p) * 16 + ch % 16;
                    assert_eq!(b[blk], x[(nn * c + ch) * h * w + p]);
                }
            }
        }
        assert_zero_padding(&b, s, "nchw_to_blk16");
        assert_eq!(same_for_thread_counts(|| from_blk(&b, s)), x);
    }
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
    cc(2, 5, 7, 9, 10, 1, 1, 1, 0, 1),      // narrow 1×1, flat path, channel tails
    cc(2, 32, 9, 7, 48, 1, 1, 2, 0, 1),     // strided 1×1 downsample, 3 output blocks
    cc(1, 20, 11, 13, 24, 3, 3, 1, 1, 1),   // 3×3/1, channel tails in and out
    cc(2, 16, 13, 10, 80, 3, 3, 2, 1, 1),   // 3×3/2, 5 output blocks (groups 4 + 1)
    cc(1, 3, 23, 19, 64, 7, 7, 2, 3, 1),    // 7×7/2 stem
    cc(1, 3, 61, 57, 64, 7, 7, 2, 3, 1),    // stem with rows of several tiles
    cc(2, 64, 7, 7, 64, 3, 3, 1, 1, 1),     // 7×7 map: 4-block tiles
    cc(2, 64, 30, 29, 32, 3, 3, 1, 1, 1),   // rows of 3 tiles, uneven
    cc(1, 48, 40, 41, 64, 1, 1, 1, 0, 1),   // flat 1×1, 1640 pixels
    cc(2, 8, 9, 11, 16, 3, 3, 1, 1, 4),     // grouped: 2 → 4 channels per group
    cc(1, 64, 10, 9, 64, 3, 3, 2, 1, 32),   // ResNeXt-like: 2 per group, stride 2
    cc(1, 128, 8, 8, 128, 3, 3, 1, 1, 32),  // 4 per group (ResNeXt 32x4d)
    cc(1, 256, 7, 7, 256, 3, 3, 1, 1, 32),  // 8 per group
    cc(1, 128, 9, 9, 128, 3, 3, 1, 1, 64),  // 2 per group (64 groups)
    cc(1, 64, 9, 8, 64, 3, 3, 1, 1, 2),     // 32 per group: group reads its 2 blocks
    cc(1, 16, 8, 8, 16, 3, 3, 1, 1, 16),    // depthwise
    cc(1, 12, 7, 7, 30, 3, 3, 1, 1, 3),     // 4 in, 10 out per group: groups straddle blocks
    cc(1, 4, 10, 12, 6, 5, 3, 3, 2, 1),     // kh ≠ kw, stride 3
    cc(1, 2, 4, 5, 3, 3, 3, 1, 2, 1),       // pad 2 > k/2: rows with no valid tap
    cc(1, 300, 5, 6, 40, 1, 1, 1, 0, 1),    // long reduction on the flat path
    cc(8, 64, 7, 7, 40, 1, 1, 1, 0, 1),     // batch 8, 7×7
    cc(5, 32, 3, 3, 32, 3, 3, 2, 0, 1),     // 1×1 output
    cc(1, 32, 13, 14, 48, 3, 3, 2, 1, 1),   // 7×7 output, stride 2: two-row tiles + a 1-block group
    cc(1, 3, 13, 12, 32, 7, 7, 2, 3, 1),    // stem on a small map: two-row tiles from NCHW
    cc(2, 40, 8, 8, 32, 5, 5, 1, 2, 1),     // 5×5 pad 2, even rows: two-row tiles only
    cc(2, 1024, 12, 12, 272, 1, 1, 1, 0, 1), // weights and inputs beyond L2: image-outer order
];

/// Returns (y, bound): the float64 result and Σ|terms| per output (NCHW).
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

// Tolerance (`check_close` in tests/common): float32 accumulation of K products plus
// bias and residual, each step rounding at most twice (the scalar kernel rounds product
// and sum separately; block-diagonal grouped weights only add exact zeros):
// |error| ≤ 2·(K + 2)·u·Σ|terms| (γ_n bound, first order), K = cin/groups·kh·kw.
// ReLU is 1-Lipschitz.

fn conv_case(c: &ConvCase, seed: u64) {
    let mut rng = Rng(seed);
    let cig = c.cin / c.groups;
    let x = rng.vec(c.n * c.cin * c.h * c.w);
    let wt = rng.vec(c.cout * cig * c.kh * c.kw);
    let b = rng.vec(c.cout);
    let conv = ConvBlk::new(&wt, &b, c.cin, c.cout, c.kh, c.kw, c.stride, c.pad, c.groups);
    let (oh, ow) = conv.output_hw(c.h, c.w).unwrap();
    let xs = Shape4::new(c.n, c.cin, c.h, c.w);
    let ys = Shape4::new(c.n, c.cout, oh, ow);
    let res = rng.vec(ys.len().unwrap());
    let (xb, rb) = (to_blk(&x, xs), to_blk(&res, ys));
    for (with_res, relu) in [(false, false), (false, true), (true, false), (true, true)] {
        let r = with_res.then_some(&rb[..]);
        let rn = with_res.then_some(&res[..]);
        let (want, bound) = conv_ref(c, &x, &wt, &b, rn, relu);
        let mut inputs: Vec<bool> = vec![false];
        if c.cin < 16 && c.groups == 1 {
            inputs.push(true); // the stem path reading NCHW
        }
        for nchw in inputs {
            let y = same_for_thread_counts(|| {
                // Garbage in y: run must overwrite every element.
                let mut y = vec![f32::NAN; blk16_len(ys)];
                if nchw {
                    conv.run_nchw(&x, xs, &mut y, r, relu);
                } else {
                    conv.run(&xb, xs, &mut y, r, relu);
                }
                y
            });
            let what = format!("{c:?} res={with_res} relu={relu} nchw={nchw} level={:?}", simd::level());
            assert_zero_padding(&y, ys, &what);
            check_close(&from_blk(&y, ys), &want, &bound, cig * c.kh * c.kw, &what);
        }
    }
}

#[test]
fn conv_blk_matches_reference_on_every_level() {
    simd::for_each_level(|_| {
        for (i, c) in CONV_CASES.iter().enumerate() {
            conv_case(c, 0x51ed + i as u64);
        }
    });
}

#[test]
fn conv_blk_output_hw() {
    let conv = ConvBlk::new(&[0.0; 64 * 3 * 49], &[0.0; 64], 3, 64, 7, 7, 2, 3, 1);
    assert_eq!(conv.output_hw(224, 224), Some((112, 112)));
    assert_eq!(conv.output_hw(193, 161), Some((97, 81)));
    assert_eq!(conv.output_hw(0, 0), None);
}

#[test]
fn max_pool2d_blk16_matches_reference() {
    // (n, c, h, w, k, stride, pad, ceil)
    let cases = [
        (2, 3, 28, 28, 3, 2, 1, false),
        (1, 20, 13, 11, 3, 2, 1, false),
        (1, 4, 13, 11, 3, 2, 0, true),
        (2, 18, 7, 9, 2, 2, 0, true),
        (1, 3, 5, 5, 2, 2, 1, true),
        (1, 64, 40, 37, 3, 2, 1, true),
    ];
    simd::for_each_level(|l| {
        for (i, &(n, c, h, w, k, st, pad, ceil)) in cases.iter().enumerate() {
            let s = Shape4::new(n, c, h, w);
            let x = Rng(100 + i as u64).vec(s.len().unwrap());
            let oh = pool_output_size(h, k, st, pad, ceil).unwrap();
            let ow = pool_output_size(w, k, st, pad, ceil).unwrap();
            let ys = Shape4::new(n, c, oh, ow);
            let xb = to_blk(&x, s);
            let y = same_for_thread_counts(|| {
                let mut y = vec![f32::NAN; blk16_len(ys)];
                max_pool2d_blk16(&xb, s, k, st, pad, ceil, &mut y);
                y
            });
            assert_zero_padding(&y, ys, "max_pool2d_blk16");
            let mut want = vec![f32::NEG_INFINITY; ys.len().unwrap()];
            for p in 0..n * c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let m = &mut want[(p * oh + oy) * ow + ox];
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * st + ky) as isize - pad as isize;
                                let ix = (ox * st + kx) as isize - pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    *m = m.max(x[(p * h + iy as usize) * w + ix as usize]);
                                }
                            }
                        }
                    }
                }
            }
            // Max is exact: bitwise equality.
            assert_eq!(from_blk(&y, ys), want, "case {i} level {l:?}");
        }
    });
}

/// Channel means of NCHW `x` in float64, and the mean of |x| (for the tolerance).
fn means(x: &[f32], s: Shape4) -> (Vec<f64>, Vec<f64>) {
    let hw = s.hw();
    let m = (0..s.n * s.c).map(|p| x[p * hw..(p + 1) * hw].iter().map(|&v| v as f64).sum::<f64>() / hw as f64).collect();
    let a = (0..s.n * s.c).map(|p| x[p * hw..(p + 1) * hw].iter().map(|&v| (v as f64).abs()).sum::<f64>() / hw as f64).collect();
    (m, a)
}

#[test]
fn squeeze_and_global_avg_pool_blk16_match_reference() {
    simd::for_each_level(|_| {
        for (i, &(n, c, h, w)) in [(1, 3, 7, 7), (2, 40, 1, 1), (2, 300, 13, 11), (1, 32, 193, 161)].iter().enumerate() {
            let s = Shape4::new(n, c, h, w);
            let x = Rng(200 + i as u64).vec(s.len().unwrap());
            let xb = to_blk(&x, s);
            let (want, abs) = means(&x, s);
            for gap in [false, true] {
                let y = same_for_thread_counts(|| {
                    let mut y = vec![f32::NAN; n * c];
                    if gap {
                        global_avg_pool_blk16(&xb, s, &mut y)
                    } else {
                        squeeze_blk16(&xb, s, &mut y)
                    }
                    y
                });
                for p in 0..n * c {
                    // f32 runs of ≤ 16 pixels (≤ 16 roundings per lane), f64 across runs,
                    // then one rounding of the mean.
                    let tol = U * want[p].abs() + 17.0 * U * abs[p];
                    assert!((y[p] as f64 - want[p]).abs() <= tol, "plane {p}: {} vs {}", y[p], want[p]);
                }
            }
        }
    });
}

/// float64 SE block on NCHW: gates from the float64 means, then x·g (+ r), ReLU.
#[allow(clippy::too_many_arguments)]
fn se_ref(x: &[f32], s: Shape4, w1: &[f32], b1: &[f32], w2: &[f32], b2: &[f32], cr: usize, res: Option<&[f32]>, relu: bool) -> (Vec<f64>, Vec<f64>) {
    let (m, _) = means(x, s);
    let (c, hw) = (s.c, s.hw());
    let mut gates = vec![0.0f64; s.n * c];
    for n in 0..s.n {
        let hid: Vec<f64> = (0..cr)
            .map(|j| (b1[j] as f64 + (0..c).map(|i| w1[j * c + i] as f64 * m[n * c + i]).sum::<f64>()).max(0.0))
            .collect();
        for i in 0..c {
            let z = b2[i] as f64 + (0..cr).map(|j| w2[i * cr + j] as f64 * hid[j]).sum::<f64>();
            gates[n * c + i] = 1.0 / (1.0 + (-z).exp());
        }
    }
    let mut y = vec![0.0; x.len()];
    let mut mag = vec![0.0; x.len()];
    for i in 0..x.len() {
        let g = gates[i / hw];
        let r = res.map_or(0.0, |r| r[i] as f64);
        let v = x[i] as f64 * g + r;
        y[i] = if relu { v.max(0.0) } else { v };
        mag[i] = (x[i] as f64).abs() + r.abs();
    }
    (y, mag)
}

#[test]
fn se_block_and_scale_blk16_match_reference() {
    simd::for_each_level(|_| {
        for (i, &(n, c, h, w, cr)) in [(1, 20, 5, 6, 4), (2, 64, 14, 14, 4), (3, 256, 7, 7, 16)].iter().enumerate() {
            let s = Shape4::new(n, c, h, w);
            let mut rng = Rng(500 + i as u64);
            let x = rng.vec(s.len().unwrap());
            let res = rng.vec(s.len().unwrap());
            let (w1, b1, w2, b2) = (rng.vec(cr * c), rng.vec(cr), rng.vec(c * cr), rng.vec(c));
            let sw = SeWeights::new(&w1, Some(&b1), &w2, Some(&b2), c, cr).unwrap();
            let (xb, rb) = (to_blk(&x, s), to_blk(&res, s));
            for (with_res, relu) in [(false, false), (true, true), (true, false)] {
                let rn = with_res.then_some(&res[..]);
                let (want, mag) = se_ref(&x, s, &w1, &b1, &w2, &b2, cr, rn, relu);
                // Out, in place, and into the residual: all identical.
                let mut outs = Vec::new();
                for form in 0..3 {
                    if form == 2 && !with_res {
                        continue;
                    }
                    outs.push(same_for_thread_counts(|| match form {
                        0 => {
                            let mut y = vec![f32::NAN; xb.len()];
                            se_block_blk16(ScaleIo::Out { x: &xb, residual: with_res.then_some(&rb[..]), out: &mut y }, s, &sw, relu);
                            y
                        }
                        1 => {
                            let mut y = xb.clone();
                            se_block_blk16(ScaleIo::InPlace { xy: &mut y, residual: with_res.then_some(&rb[..]) }, s, &sw, relu);
                            y
                        }
                        _ => {
                            let mut y = rb.clone();
                            se_block_blk16(ScaleIo::IntoResidual { x: &xb, ry: &mut y }, s, &sw, relu);
                            y
                        }
                    }));
                }
                for y in &outs[1..] {
                    assert_eq!(y, &outs[0]);
                }
                assert_zero_padding(&outs[0], s, "se_block_blk16");
                let got = from_blk(&outs[0], s);
                for j in 0..got.len() {
                    // The gate is within ~1e-5 relative (f32 squeeze + excite vs f64; a
                    // sigmoid has slope ≤ 1/4); then ≤ 2 roundings of the scale and add.
                    let tol = 2e-5 * mag[j] + 1e-7;
                    assert!((got[j] as f64 - want[j]).abs() <= tol, "se case {i} elem {j}: {} vs {}", got[j], want[j]);
                }
                // se_scale_blk16 with the block's own gates reproduces se_block exactly.
                let mut z = vec![0.0f32; n * c];
                squeeze_blk16(&xb, s, &mut z);
                let mut g = vec![0.0f32; n * c];
                senet_kernels::se::excite(&z, n, &sw, &mut g);
                let y2 = same_for_thread_counts(|| {
                    let mut y = vec![f32::NAN; xb.len()];
                    se_scale_blk16(ScaleIo::Out { x: &xb, residual: with_res.then_some(&rb[..]), out: &mut y }, s, &g, relu);
                    y
                });
                assert_eq!(y2, outs[0], "se_scale_blk16 vs se_block_blk16");
            }
        }
    });
}

/// One layer run at input sizes that want different tile widths (7×7 maps take 3-block
/// tiles, wider ones 2): each packing is derived from the one that exists, the others
/// dropped, and every size must still match the reference.
#[test]
fn conv_blk_switches_packings_across_input_sizes() {
    simd::for_each_level(|_| {
        let mut rng = Rng(0xbeef);
        let (cin, cout) = (64, 96);
        let wt = rng.vec(cout * cin * 9);
        let b = rng.vec(cout);
        let conv = ConvBlk::new(&wt, &b, cin, cout, 3, 3, 1, 1, 1);
        for (h, w) in [(7, 7), (20, 21), (7, 7), (5, 30), (6, 6)] {
            let c = cc(2, cin, h, w, cout, 3, 3, 1, 1, 1);
            let x = rng.vec(c.n * cin * h * w);
            let xs = Shape4::new(c.n, cin, h, w);
            let ys = Shape4::new(c.n, cout, h, w);
            let mut y = vec![f32::NAN; blk16_len(ys)];
            conv.run(&to_blk(&x, xs), xs, &mut y, None, true);
            let (want, bound) = conv_ref(&c, &x, &wt, &b, None, true);
            check_close(&from_blk(&y, ys), &want, &bound, cin * 9, &format!("{h}x{w} level={:?}", simd::level()));
        }
    });
}

/// `run_squeeze` writes the same output as `run` and the channel means of that output
/// (summed per tile, reduced in f64): within a few f32 roundings of the float64 mean of
/// the stored outputs (≤ 24 pixels per f32 partial sum), bitwise the same for any
/// thread count.
#[test]
fn conv_blk_run_squeeze_means_match_output() {
    simd::for_each_level(|_| {
        for (i, c) in [
            cc(2, 64, 14, 13, 80, 1, 1, 1, 0, 1),  // flat 1×1 (SE-ResNet conv3)
            cc(1, 48, 9, 9, 40, 1, 1, 2, 0, 1),    // strided 1×1 (subsampled copy)
            cc(2, 32, 11, 12, 48, 3, 3, 1, 1, 1),  // padded 3×3
            cc(1, 64, 7, 7, 64, 3, 3, 1, 1, 1),    // 7×7: two-row tiles
            cc(1, 3, 23, 19, 24, 7, 7, 2, 3, 1),   // stem shape (Blk16 input)
            cc(1, 32, 8, 8, 32, 3, 3, 1, 1, 8),    // grouped
        ]
        .iter()
        .enumerate()
        {
            let mut rng = Rng(0x5eed + i as u64);
            let x = rng.vec(c.n * c.cin * c.h * c.w);
            let wt = rng.vec(c.cout * (c.cin / c.groups) * c.kh * c.kw);
            let b = rng.vec(c.cout);
            let conv = ConvBlk::new(&wt, &b, c.cin, c.cout, c.kh, c.kw, c.stride, c.pad, c.groups);
            let (oh, ow) = conv.output_hw(c.h, c.w).unwrap();
            let xs = Shape4::new(c.n, c.cin, c.h, c.w);
            let ys = Shape4::new(c.n, c.cout, oh, ow);
            let xb = to_blk(&x, xs);
            let mut plain = vec![0.0f32; blk16_len(ys)];
            conv.run(&xb, xs, &mut plain, None, false);
            let means_all = std::cell::RefCell::new(Vec::new());
            let y = same_for_thread_counts(|| {
                let mut y = vec![f32::NAN; blk16_len(ys)];
                let mut m = vec![f32::NAN; c.n * c.cout];
                conv.run_squeeze(&xb, xs, &mut y, None, false, &mut m);
                means_all.borrow_mut().push(m);
                y
            });
            let means_all = means_all.into_inner();
            assert_eq!(y, plain, "{c:?}: output differs from run()");
            for m in &means_all[1..] {
                assert!(m.iter().zip(&means_all[0]).all(|(a, b)| a.to_bits() == b.to_bits()), "{c:?}: means depend on threads");
            }
            let yn = from_blk(&y, ys);
            let hw = oh * ow;
            for p in 0..c.n * c.cout {
                let seg = &yn[p * hw..(p + 1) * hw];
                let want: f64 = seg.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
                let scale: f64 = seg.iter().map(|&v| (v as f64).abs()).sum::<f64>() / hw as f64;
                let got = means_all[0][p] as f64;
                assert!((got - want).abs() <= 32.0 * U * scale + 1e-30, "{c:?} plane {p}: {got} vs {want}");
            }
        }
    });
}

/// Scale outputs of 16 MiB and more are written with non-temporal stores: exact
/// `act(x·g + r)` (one multiply, one add: the f32 result is the correctly rounded
/// reference of those two operations) on every level, into an aligned buffer.
#[test]
fn se_scale_blk16_streaming_is_exact() {
    simd::for_each_level(|_| {
        let xs = Shape4::new(4, 256, 64, 64); // 16.8 MB in Blk16
        let mut rng = Rng(77);
        let len = blk16_len(xs);
        let x = to_blk(&rng.vec(xs.len().unwrap()), xs);
        let r = to_blk(&rng.vec(xs.len().unwrap()), xs);
        let g = rng.vec(xs.n * xs.c);
        // 64-byte aligned output (the executor's buffers are).
        let mut buf = vec![0.0f32; len + 16];
        let off = buf.as_ptr().align_offset(64);
        let y = &mut buf[off..off + len];
        se_scale_blk16(ScaleIo::Out { x: &x, residual: Some(&r), out: y }, xs, &g, true);
        let cb = xs.c / 16;
        for n in 0..xs.n {
            for b in 0..cb {
                for p in 0..xs.h * xs.w {
                    for l in 0..16 {
                        let i = ((n * cb + b) * xs.h * xs.w + p) * 16 + l;
                        let want = (x[i] * g[n * xs.c + b * 16 + l] + r[i]).max(0.0);
                        assert_eq!(y[i].to_bits(), want.to_bits(), "element {i}");
                    }
                }
            }
        }
    });
}

/// The SE-gated 1×1 path (`gate_fusable` layers): `dense_matrix` reads back exactly
/// the weights and bias the layer was built with (from whichever packing it holds,
/// before and after runs that repack it; the SE fold of `graph.rs` multiplies them into
/// the SE block's first layer), and `run_gated` stores what `run` followed by the SE
/// scale (`se_scale_blk16`) stores: exactly (the same multiply and add on the same
/// values) on maps of fewer than 8 pixels per input channel; on larger maps, whose gates
/// are folded into per-image weight copies, within a few roundings (relative to
/// Σ|g·w·x| + |g·b| + |r|) and bitwise batch-independent.
#[test]
fn conv_blk_dense_matrix_and_run_gated() {
    simd::for_each_level(|level| {
        // (n, cin, h, w, cout): the tile width differs with h·w (7×7 → 3 blocks per tile,
        // wider maps 2 or 4), channels not multiples of 16 exercise the padding lanes.
        // The last two: ≥ 8 pixels per input channel (the folded path).
        for (i, &(n, cin, h, w, cout)) in [(2, 64, 14, 13, 80), (3, 40, 7, 7, 56), (1, 16, 9, 11, 64), (2, 96, 5, 6, 33), (3, 16, 12, 11, 48), (2, 24, 15, 14, 40)].iter().enumerate() {
            let folded = h * w >= 8 * cin;
            let mut rng = Rng(0x9a7e + i as u64);
            let wt = rng.vec(cout * cin);
            let b = rng.vec(cout);
            let conv = ConvBlk::new(&wt, &b, cin, cout, 1, 1, 1, 0, 1);
            assert!(conv.gate_fusable());
            assert_eq!(conv.dense_matrix().map(|(m, c)| (bits(&m), bits(&c))), Some((bits(&wt), bits(&b))), "case {i}: as built");
            let xs = Shape4::new(n, cin, h, w);
            let ys = Shape4::new(n, cout, h, w);
            let x = rng.vec(n * cin * h * w);
            let xb = to_blk(&x, xs);
            let mut y = vec![0.0f32; blk16_len(ys)];
            conv.run(&xb, xs, &mut y, None, false);
            assert_eq!(conv.dense_matrix().map(|(m, c)| (bits(&m), bits(&c))), Some((bits(&wt), bits(&b))), "case {i}: after a run");
            // Gated run == run + scale, with and without residual and ReLU.
            let gates: Vec<f32> = rng.vec(n * cout).iter().map(|v| 0.5 + 0.5 * v).collect();
            let cp = cout.div_ceil(16) * 16;
            let mut gp = vec![0.0f32; n * cp];
            for img in 0..n {
                gp[img * cp..img * cp + cout].copy_from_slice(&gates[img * cout..(img + 1) * cout]);
            }
            let r = to_blk(&rng.vec(n * cout * h * w), ys);
            for (res, relu) in [(None, false), (Some(&r[..]), true), (Some(&r[..]), false), (None, true)] {
                let mut want = y.clone();
                se_scale_blk16(ScaleIo::InPlace { xy: &mut want, residual: res }, ys, &gates, relu);
                let got = same_for_thread_counts(|| {
                    let mut g = vec![f32::NAN; blk16_len(ys)];
                    conv.run_gated(&xb, xs, &mut g, res, relu, &gp);
                    g
                });
                assert_zero_padding(&got, ys, "run_gated");
                if !folded {
                    assert_eq!(bits(&got), bits(&want), "{level:?} case {i} res={} relu={relu}", res.is_some());
                    continue;
                }
                // Folded: each image alone gives the same bits as in the batch.
                for img in 0..n {
                    let (xi, yi) = (Shape4::new(1, cin, h, w), Shape4::new(1, cout, h, w));
                    let per_x = blk16_len(xi);
                    let per_y = blk16_len(yi);
                    let mut g1 = vec![f32::NAN; per_y];
                    let r1 = res.map(|r| &r[img * per_y..(img + 1) * per_y]);
                    conv.run_gated(&xb[img * per_x..(img + 1) * per_x], xi, &mut g1, r1, relu, &gp[img * cp..(img + 1) * cp]);
                    assert_eq!(bits(&g1), bits(&got[img * per_y..(img + 1) * per_y]), "{level:?} case {i} image {img}: batch-dependent");
                }
                // Against run + scale: within (cin + 8) roundings of the terms' magnitude.
                let (gn, wn) = (from_blk(&got, ys), from_blk(&want, ys));
                let xn = &x;
                let rn = res.map(|r| from_blk(r, ys));
                for img in 0..n {
                    for co in 0..cout {
                        let gg = gates[img * cout + co].abs() as f64;
                        for p in 0..h * w {
                            let mut mag = (b[co] as f64).abs();
                            for c in 0..cin {
                                mag += (wt[co * cin + c] as f64 * xn[(img * cin + c) * h * w + p] as f64).abs();
                            }
                            let o = (img * cout + co) * h * w + p;
                            let bound = (cin as f64 + 8.0) * U * (gg * mag + rn.as_ref().map_or(0.0, |r| (r[o] as f64).abs())) + 1e-30;
                            assert!(((gn[o] - wn[o]) as f64).abs() <= bound, "{level:?} case {i} out {o}: {} vs {}", gn[o], wn[o]);
                        }
                    }
                }
            }
        }
    });
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One layer object kept across SIMD level switches (`setSimdLevel` at run time): the
/// wide-tile packings made under AVX-512 (4, 3 or 2 blocks per tile) must be re-derived
/// correctly for the one-block kernels of the other levels and back. (Each packing is
/// located with the tile widths it was made with; before, a scalar run after an
/// AVX-512 run read the 4-block packing as if it held single blocks.)
#[test]
fn conv_blk_survives_level_switches() {
    let mut rng = Rng(0x1e7e1);
    for &(cin, cout, k, pad, h, w) in &[(64, 256, 1, 0, 9, 10), (96, 80, 3, 1, 7, 7), (64, 96, 3, 1, 12, 11)] {
        let wt = rng.vec(cout * cin * k * k);
        let b = rng.vec(cout);
        let conv = ConvBlk::new(&wt, &b, cin, cout, k, k, 1, pad, 1);
        let c = cc(1, cin, h, w, cout, k, k, 1, pad, 1);
        let x = rng.vec(cin * h * w);
        let xs = Shape4::new(1, cin, h, w);
        let ys = Shape4::new(1, cout, h, w);
        let (want, bound) = conv_ref(&c, &x, &wt, &b, None, false);
        let levels = simd::supported_levels();
        // Every level after every other one (and each twice in a row).
        for _ in 0..2 {
            simd::for_each_level(|_| {
                for &l in levels.iter().rev() {
                    simd::set_level(l).unwrap();
                    let mut y = vec![f32::NAN; blk16_len(ys)];
                    conv.run(&to_blk(&x, xs), xs, &mut y, None, false);
                    check_close(&from_blk(&y, ys), &want, &bound, cin * k * k, &format!("{cin}->{cout} k{k} after switching to {l:?}"));
                }
            });
        }
    }
}

/// The loop orders (tile-, group-, image-, chunk-outer, memory-sized chunks), chosen
/// from the L2 size, change only speed: an L2 of 16 KiB, 512 KiB and 64 MiB drive
/// different orders on these layers (batch 1 and 3, 1 and 2 threads) and every output
/// bit must be the same, on every SIMD level.
#[test]
fn conv_blk_results_do_not_depend_on_the_loop_order() {
    let mut rng = Rng(0x12b17);
    let cases = [
        (1, 256, 64, 1, 1, 0, 24, 24),
        (1, 512, 128, 1, 1, 0, 16, 16),
        // 16 KiB: memory-sized chunks (one-block tiles: 5 chunks × 128 Ki + 37 Ki floats
        // moved against 128 Ki + 32 groups × 37 Ki); 512 KiB: group-outer.
        (1, 256, 512, 1, 1, 0, 12, 12),
        (3, 128, 96, 1, 1, 0, 10, 9),
        (1, 64, 80, 3, 2, 1, 30, 30),
        (2, 96, 64, 3, 1, 1, 11, 13),
    ];
    simd::for_each_level(|level| {
        for &(n, cin, cout, k, stride, pad, h, w) in &cases {
            let wt = rng.vec(cout * cin * k * k);
            let b = rng.vec(cout);
            let conv = ConvBlk::new(&wt, &b, cin, cout, k, k, stride, pad, 1);
            let (oh, ow) = conv.output_hw(h, w).unwrap();
            let xs = Shape4::new(n, cin, h, w);
            let ys = Shape4::new(n, cout, oh, ow);
            let xb = to_blk(&rng.vec(xs.len().unwrap()), xs);
            let rb = to_blk(&rng.vec(ys.len().unwrap()), ys);
            let mut outs = Vec::new();
            for l2 in [16 << 10, 512 << 10, 64 << 20] {
                set_l2_bytes(Some(l2));
                outs.push(same_for_thread_counts(|| {
                    let mut y = vec![f32::NAN; blk16_len(ys)];
                    conv.run(&xb, xs, &mut y, Some(&rb), true);
                    y
                }));
            }
            set_l2_bytes(None);
            for o in &outs[1..] {
                assert_eq!(bits(&outs[0]), bits(o), "{level:?} n={n} {cin}->{cout} k={k}/{stride} {h}x{w}");
            }
        }
    });
}
