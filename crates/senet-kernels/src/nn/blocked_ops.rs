//! The non-convolution ops of a forward pass on Blk16 activations (see `blocked.rs` for
//! the layout): max pool, global average pool, add(+ReLU) and the SE block. Each
//! pixel's 16 channels are one vector (two on AVX2, sixteen scalars on the scalar
//! level), so all of them are plain vector loops without shuffles.

use super::{blk16_len, blocks, BLK};
use crate::nn::{for_each_task, pool_output_size, SyncPtr};
use crate::se::{self, ScaleIo, SeWeights};
use crate::simd;
use crate::vec::{simd_dispatch, stream_fence, Vf32};
use crate::Shape4;

/// Max pooling k×k, `stride`, `pad` (padding counts as −∞), floor or ceil output size
/// ([`pool_output_size`], PyTorch's rule), on Blk16 `x` of logical shape `xs` into Blk16
/// `y` [n, c, oh, ow]. Padding lanes stay zero (max of zeros).
///
/// # Panics
/// When the output size is undefined or a length does not match its shape.
#[allow(clippy::too_many_arguments)]
pub fn max_pool2d_blk16(x: &[f32], xs: Shape4, k: usize, stride: usize, pad: usize, ceil_mode: bool, y: &mut [f32]) {
    let oh = pool_output_size(xs.h, k, stride, pad, ceil_mode).expect("max_pool2d_blk16: undefined output size");
    let ow = pool_output_size(xs.w, k, stride, pad, ceil_mode).expect("max_pool2d_blk16: undefined output size");
    assert_eq!(x.len(), blk16_len(xs), "max_pool2d_blk16: input length");
    let ys = Shape4::new(xs.n, xs.c, oh, ow);
    assert_eq!(y.len(), blk16_len(ys), "max_pool2d_blk16: output length");
    let planes = xs.n * blocks(xs.c);
    let level = simd::level();
    let yp = SyncPtr(y.as_mut_ptr());
    // A task is one output row of one (image, block): disjoint parts of y.
    for_each_task(planes * oh, x.len() >= crate::pool::PAR_GRAIN, |t| {
        let (p, oy) = (t / oh, t % oh);
        let xp = &x[p * xs.h * xs.w * BLK..(p + 1) * xs.h * xs.w * BLK];
        // SAFETY: row oy of plane p of y belongs to task t only.
        let yr = unsafe { std::slice::from_raw_parts_mut(yp.get().add((p * oh + oy) * ow * BLK), ow * BLK) };
        let y0 = (oy * stride).saturating_sub(pad);
        let y1 = (oy * stride + k).saturating_sub(pad).min(xs.h);
        max_row(level, xp, xs.w, y0, y1, k, stride, pad, yr);
    });
}

simd_dispatch!(fn max_row(xp: &[f32], w: usize, y0: usize, y1: usize, k: usize, stride: usize, pad: usize, yr: &mut [f32]) => max_row_k);

/// One output row: for each output pixel, the lane-wise max over input rows y0..y1 and
/// the pixel's valid columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn max_row_k<V: Vf32>(xp: &[f32], w: usize, y0: usize, y1: usize, k: usize, stride: usize, pad: usize, yr: &mut [f32]) {
    let ow = yr.len() / BLK;
    for ox in 0..ow {
        let x0 = (ox * stride).saturating_sub(pad);
        let x1 = (ox * stride + k).saturating_sub(pad).min(w);
        for v in 0..BLK / V::LANES {
            let mut m = V::splat(f32::NEG_INFINITY);
            for iy in y0..y1 {
                for ix in x0..x1 {
                    // SAFETY: iy < h, ix < w: inside the plane slice.
                    m = m.max(V::load(xp.as_ptr().add((iy * w + ix) * BLK + v * V::LANES)));
                }
            }
            m.store(yr.as_mut_ptr().add(ox * BLK + v * V::LANES));
        }
    }
}

/// `y = a + b`, then ReLU when `relu`: element-wise, so the Blk16 op is the NCHW one
/// ([`crate::nn::add_relu`]) on the same buffers (zero padding lanes stay zero).
pub fn add_relu_blk16(a: &[f32], b: &[f32], y: &mut [f32], relu: bool) {
    crate::nn::add_relu(a, b, y, relu)
}

/// Channel means (the SE squeeze): `z[n·c + ch] = mean over h×w of x[n, ch]`, Blk16
/// `x` of logical shape `xs`, `z` of n·c floats. Each 16-channel block is summed as
/// 16-lane f32 vectors over runs of ≤ 16 pixels, run sums added in f64: each lane's
/// error is ~16 f32 roundings whatever h×w (as `se::squeeze`).
///
/// # Panics
/// When a length does not match its shape.
pub fn squeeze_blk16(x: &[f32], xs: Shape4, z: &mut [f32]) {
    assert_eq!(x.len(), blk16_len(xs), "squeeze_blk16: input length");
    assert_eq!(z.len(), xs.n * xs.c, "squeeze_blk16: output length");
    let cb = blocks(xs.c);
    let hw = xs.hw();
    let level = simd::level();
    let zp = SyncPtr(z.as_mut_ptr());
    let per = (crate::pool::PAR_GRAIN / (hw * BLK).max(1)).clamp(1, (xs.n * cb).max(1));
    let tasks = (xs.n * cb).div_ceil(per);
    for_each_task(tasks, x.len() >= 2 * crate::pool::PAR_GRAIN, |t| {
        for p in t * per..((t + 1) * per).min(xs.n * cb) {
            let (n, b) = (p / cb, p % cb);
            let nc = BLK.min(xs.c - b * BLK);
            let mut s = [0.0f64; BLK];
            block_sum(level, &x[p * hw * BLK..(p + 1) * hw * BLK], &mut s);
            for (l, &sl) in s.iter().enumerate().take(nc) {
                // SAFETY: z[n·c + 16b + l] for l < nc belongs to block p, i.e. task t.
                unsafe { *zp.get().add(n * xs.c + b * BLK + l) = (sl / hw as f64) as f32 };
            }
        }
    });
}

/// Global average pooling on Blk16: the same as [`squeeze_blk16`] (`y` [n, c]).
pub fn global_avg_pool_blk16(x: &[f32], xs: Shape4, y: &mut [f32]) {
    squeeze_blk16(x, xs, y)
}

simd_dispatch!(fn block_sum(xb: &[f32], s: &mut [f64; BLK]) => block_sum_k);

/// Per-lane sums of the 16-float pixels of `xb`.
#[inline(always)]
unsafe fn block_sum_k<V: Vf32>(xb: &[f32], s: &mut [f64; BLK]) {
    const RUN: usize = 16;
    let px = xb.len() / BLK;
    let mut tmp = [0.0f32; BLK];
    let mut p = 0;
    while p < px {
        let end = (p + RUN).min(px);
        for v in 0..BLK / V::LANES {
            let mut a = V::zero();
            for q in p..end {
                // SAFETY: q < px, so the vector lies inside xb.
                a = a.add(V::load(xb.as_ptr().add(q * BLK + v * V::LANES)));
            }
            a.store(tmp.as_mut_ptr().add(v * V::LANES));
        }
        for l in 0..BLK {
            s[l] += tmp[l] as f64;
        }
        p = end;
    }
}

/// The SE scale on Blk16: `out = act(x · gates[n, c] [+ residual])`, gates broadcast
/// over h×w, `io` as in [`se::scale`] (in-place forms allowed). Padding lanes get gate
/// 0 and stay zero (given zero padding lanes in the residual).
///
/// # Panics
/// When a length does not match its shape.
pub fn se_scale_blk16(io: ScaleIo, xs: Shape4, gates: &[f32], relu: bool) {
    assert_eq!(gates.len(), xs.n * xs.c, "se_scale_blk16: gates length");
    let (x, r, y, len) = raw(io);
    assert_eq!(len, blk16_len(xs), "se_scale_blk16: length");
    let padded = pad_gates(gates, xs.n, xs.c);
    scale_in(x, r, y, xs, &padded, relu);
}

/// Squeeze, excite ([`se::excite`]) and scale in two passes over the Blk16 activation:
/// `out = act(x · sigmoid(W2·relu(W1·mean(x) + b1) + b2) [+ residual])`. Sample by
/// sample (each squeezed, excited and scaled before the next, so the second pass reads
/// it from cache), blocks in parallel. In-place forms are safe: a sample's squeeze ends
/// before any of its outputs is written.
///
/// # Panics
/// When `w.c != xs.c` or a length does not match its shape.
pub fn se_block_blk16(io: ScaleIo, xs: Shape4, w: &SeWeights, relu: bool) {
    assert_eq!(w.c, xs.c, "se_block_blk16: weights' channel count");
    let (x, r, y, len) = raw(io);
    assert_eq!(len, blk16_len(xs), "se_block_blk16: length");
    let sample = len / xs.n.max(1);
    let one = Shape4::new(1, xs.c, xs.h, xs.w);
    let mut z = vec![0.0f32; xs.c];
    let mut g = vec![0.0f32; xs.c];
    for n in 0..xs.n {
        // SAFETY: sample n of x is read here before this sample's outputs are written
        // (the only region of y it may alias); offsets stay inside the buffers.
        let xi = unsafe { std::slice::from_raw_parts(x.add(n * sample), sample) };
        squeeze_blk16(xi, one, &mut z);
        se::excite(&z, 1, w, &mut g);
        let padded = pad_gates(&g, 1, xs.c);
        let ri = if r.is_null() { r } else { unsafe { r.add(n * sample) } };
        unsafe { scale_in(x.add(n * sample), ri, y.add(n * sample), one, &padded, relu) };
    }
}

/// Raw (x, residual or null, y, length) of a [`ScaleIo`], lengths checked.
fn raw(mut io: ScaleIo) -> (*const f32, *const f32, *mut f32, usize) {
    match &mut io {
        ScaleIo::Out { x, residual, out } => {
            assert_eq!(x.len(), out.len(), "out length");
            if let Some(r) = residual {
                assert_eq!(r.len(), x.len(), "residual length");
            }
            (x.as_ptr(), residual.map_or(std::ptr::null(), |r| r.as_ptr()), out.as_mut_ptr(), x.len())
        }
        ScaleIo::InPlace { xy, residual } => {
            if let Some(r) = residual {
                assert_eq!(r.len(), xy.len(), "residual length");
            }
            (xy.as_ptr(), residual.map_or(std::ptr::null(), |r| r.as_ptr()), xy.as_mut_ptr(), xy.len())
        }
        ScaleIo::IntoResidual { x, ry } => {
            assert_eq!(x.len(), ry.len(), "residual length");
            (x.as_ptr(), ry.as_ptr(), ry.as_mut_ptr(), x.len())
        }
    }
}

/// Gates [n, c] → [n, 16·⌈c/16⌉] with zero padding lanes.
fn pad_gates(g: &[f32], n: usize, c: usize) -> Vec<f32> {
    let cp = blocks(c) * BLK;
    let mut out = vec![0.0f32; n * cp];
    for i in 0..n {
        out[i * cp..i * cp + c].copy_from_slice(&g[i * c..(i + 1) * c]);
    }
    out
}

/// `y = act(x · gate + r)` over a Blk16 tensor; `gates` [n, 16·cb]. The pointers cover
/// `blk16_len(xs)` floats; y may equal x or r exactly (element-wise op).
fn scale_in(x: *const f32, r: *const f32, y: *mut f32, xs: Shape4, gates: &[f32], relu: bool) {
    let cb = blocks(xs.c);
    let hw = xs.hw();
    let planes = xs.n * cb;
    // Tasks of ≥ PAR_GRAIN floats, a multiple of the thread count, planes split evenly
    // (64 planes of 1024@14 in 7 tasks of 10 kept one of 2 threads busy 4/7 of the op).
    let per = (crate::pool::PAR_GRAIN / (hw * BLK).max(1)).clamp(1, planes.max(1));
    let threads = crate::pool::threads_here().max(1);
    let tasks = planes.div_ceil(per).next_multiple_of(threads).min(planes.max(1));
    let level = simd::level();
    // Outputs too large for the cache (batch 8 at 56×56: 26 MB) are written with
    // non-temporal stores, saving the read-for-ownership of every line; planes are
    // 64-byte multiples, so an aligned y keeps every store aligned.
    let stream = planes * hw * BLK * 4 >= STREAM_MIN_BYTES && (y as usize).is_multiple_of(64);
    let (xp, rp, yp) = (SyncPtr(x as *mut f32), SyncPtr(r as *mut f32), SyncPtr(y));
    for_each_task(tasks, planes * hw * BLK >= 2 * crate::pool::PAR_GRAIN, |t| {
        for p in t * planes / tasks..(t + 1) * planes / tasks {
            let off = p * hw * BLK;
            let rp = if rp.get().is_null() { std::ptr::null() } else { unsafe { rp.get().add(off) as *const f32 } };
            // SAFETY: plane p (hw·16 floats at off) is written by this task only, and
            // read (x, r) only at the indices it writes, so exact aliasing is fine.
            unsafe { scale_plane(level, xp.get().add(off), rp, yp.get().add(off), hw, gates[p * BLK..].as_ptr(), relu, stream) };
        }
        if stream {
            stream_fence();
        }
    });
}

/// Output size from which the scale streams its stores (see `se.rs`).
const STREAM_MIN_BYTES: usize = 16 << 20;

/// `scale_plane_k` for `level`.
///
/// # Safety
/// x, y (and r unless null) cover `hw·16` floats, g 16; y may equal x or r exactly.
/// `level` comes from `simd::level()` (the CPU supports it).
#[allow(clippy::too_many_arguments)]
unsafe fn scale_plane(level: simd::SimdLevel, x: *const f32, r: *const f32, y: *mut f32, hw: usize, g: *const f32, relu: bool, stream: bool) {
    #[cfg(target_arch = "x86_64")]
    #[cfg_attr(not(feature = "emulate-avx512"), target_feature(enable = "avx512f"))]
    unsafe fn avx512(x: *const f32, r: *const f32, y: *mut f32, hw: usize, g: *const f32, relu: bool, stream: bool) {
        scale_plane_k::<crate::vec::Avx512>(x, r, y, hw, g, relu, stream)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(x: *const f32, r: *const f32, y: *mut f32, hw: usize, g: *const f32, relu: bool, stream: bool) {
        scale_plane_k::<crate::vec::Avx2>(x, r, y, hw, g, relu, stream)
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        simd::SimdLevel::Avx512 => avx512(x, r, y, hw, g, relu, stream),
        #[cfg(target_arch = "x86_64")]
        simd::SimdLevel::Avx2 => avx2(x, r, y, hw, g, relu, stream),
        _ => scale_plane_k::<f32>(x, r, y, hw, g, relu, stream),
    }
}

#[inline(always)]
unsafe fn scale_plane_k<V: Vf32>(x: *const f32, r: *const f32, y: *mut f32, hw: usize, g: *const f32, relu: bool, stream: bool) {
    for p in 0..hw {
        for v in 0..BLK / V::LANES {
            let o = p * BLK + v * V::LANES;
            let mut a = V::load(x.add(o)).mul(V::load(g.add(v * V::LANES)));
            if !r.is_null() {
                a = a.add(V::load(r.add(o)));
            }
            if relu {
                a = a.max(V::zero());
            }
            if stream {
                a.store_stream(y.add(o));
            } else {
                a.store(y.add(o));
            }
        }
    }
}
