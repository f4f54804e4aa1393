//! Max pooling and global average pooling, NCHW.

use super::{for_each_task, SyncPtr};
use crate::simd;
use crate::vec::{simd_dispatch, Vf32};
use crate::Shape4;

/// Output length of a pooling window `k` with `stride` and `pad` over `h` input
/// positions: `floor((h + 2·pad − k) / stride) + 1`, or with `ceil_mode`
/// `ceil(...) + 1` minus one when the last window would start inside the right padding
/// only (PyTorch's rule: drop it when `(out − 1)·stride ≥ h + pad`). None when the padded
/// input is shorter than the window or `stride` is 0.
pub fn pool_output_size(h: usize, k: usize, stride: usize, pad: usize, ceil_mode: bool) -> Option<usize> {
    if stride == 0 || k == 0 {
        return None;
    }
    // PyTorch's pooling_output_shape: in ceil mode the span gets stride − 1 added before
    // the floor division, so a last window may overhang the input (3×3/2 over 2×2 → 1×1).
    let num = (h + 2 * pad + if ceil_mode { stride - 1 } else { 0 }).checked_sub(k)?;
    let mut out = num / stride + 1;
    if ceil_mode && (out - 1) * stride >= h + pad {
        out -= 1;
    }
    (out > 0).then_some(out)
}

/// Max pooling k×k, `stride`, `pad` (padding never wins: it counts as −∞), floor or ceil
/// output size ([`pool_output_size`]), as PyTorch's `max_pool2d`. `x` has shape `xs`,
/// `y` [n, c, oh, ow]. A window with no input element (only possible when
/// `pad > k / 2`, which PyTorch rejects) yields −∞.
///
/// # Panics
/// When the output size is undefined or a buffer length does not match its shape.
pub fn max_pool2d(x: &[f32], xs: Shape4, k: usize, stride: usize, pad: usize, ceil_mode: bool, y: &mut [f32]) {
    let oh = pool_output_size(xs.h, k, stride, pad, ceil_mode).expect("max_pool2d: undefined output size");
    let ow = pool_output_size(xs.w, k, stride, pad, ceil_mode).expect("max_pool2d: undefined output size");
    assert_eq!(Some(x.len()), xs.len(), "max_pool2d: input length");
    let planes = xs.n * xs.c;
    assert_eq!(y.len(), planes * oh * ow, "max_pool2d: output length");
    let (h, w) = (xs.h, xs.w);
    // A task is a run of whole planes, so tasks write disjoint parts of y.
    let per = (crate::pool::PAR_GRAIN / (h * w).max(1)).clamp(1, planes.max(1));
    let tasks = planes.div_ceil(per);
    let level = simd::level();
    let yp = SyncPtr(y.as_mut_ptr());
    for_each_task(tasks, x.len() >= crate::pool::PAR_GRAIN, |t| {
        let p0 = t * per;
        let p1 = (p0 + per).min(planes);
        // Padded row: index j holds input column j − pad; −∞ where that is outside.
        let tlen = (ow - 1) * stride + k;
        let mut row = vec![f32::NEG_INFINITY; tlen];
        let lo = pad.min(tlen);
        let hi = (pad + w).min(tlen);
        // SAFETY: planes p0..p1 of y belong to this task only; the slice covers them.
        let yt = unsafe { std::slice::from_raw_parts_mut(yp.get().add(p0 * oh * ow), (p1 - p0) * oh * ow) };
        for p in p0..p1 {
            let xp = &x[p * h * w..(p + 1) * h * w];
            let yo = &mut yt[(p - p0) * oh * ow..(p - p0 + 1) * oh * ow];
            for oy in 0..oh {
                let y0 = (oy * stride).saturating_sub(pad);
                let y1 = (oy * stride + k).saturating_sub(pad).min(h);
                // Vertical max of the window's rows into the padded row (vectorized).
                if y0 >= y1 {
                    row[lo..hi].fill(f32::NEG_INFINITY);
                } else {
                    let dst = &mut row[lo..hi];
                    dst.copy_from_slice(&xp[y0 * w..y0 * w + (hi - lo)]);
                    for iy in y0 + 1..y1 {
                        max_into(level, dst, &xp[iy * w..iy * w + (hi - lo)]);
                    }
                }
                let yr = &mut yo[oy * ow..(oy + 1) * ow];
                for (ox, v) in yr.iter_mut().enumerate() {
                    let win = &row[ox * stride..ox * stride + k];
                    *v = win.iter().fold(f32::NEG_INFINITY, |m, &e| if e > m { e } else { m });
                }
            }
        }
    });
}

simd_dispatch!(fn max_into(dst: &mut [f32], src: &[f32]) => max_into_kernel);

/// `dst[i] = max(dst[i], src[i])`.
#[inline(always)]
unsafe fn max_into_kernel<V: Vf32>(dst: &mut [f32], src: &[f32]) {
    let n = dst.len().min(src.len());
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let mut i = 0;
    // SAFETY: i + LANES ≤ n for the vector loop, i < n for the tail.
    while i + V::LANES <= n {
        V::load(d.add(i)).max(V::load(s.add(i))).store(d.add(i));
        i += V::LANES;
    }
    while i < n {
        f32::load(d.add(i)).max(f32::load(s.add(i))).store(d.add(i));
        i += 1;
    }
}

/// Global average pooling: `y[n, c] = mean over h·w of x[n, c]` (`y` has n·c values,
/// i.e. [n, c] or [n, c, 1, 1]). Sums in float64, so the result is the correctly rounded
/// mean up to one rounding of the division (independent of h·w).
///
/// # Panics
/// When a buffer length does not match its shape.
pub fn global_avg_pool(x: &[f32], xs: Shape4, y: &mut [f32]) {
    assert_eq!(Some(x.len()), xs.len(), "global_avg_pool: input length");
    let planes = xs.n * xs.c;
    assert_eq!(y.len(), planes, "global_avg_pool: output length");
    let hw = xs.hw();
    if hw == 0 {
        y.fill(f32::NAN);
        return;
    }
    let per = (crate::pool::PAR_GRAIN / hw).clamp(1, planes.max(1));
    let tasks = planes.div_ceil(per);
    let yp = SyncPtr(y.as_mut_ptr());
    for_each_task(tasks, x.len() >= crate::pool::PAR_GRAIN, |t| {
        let p0 = t * per;
        let p1 = (p0 + per).min(planes);
        for p in p0..p1 {
            // Four partial sums break the add dependency chain; float64 keeps them exact
            // enough that their order does not matter at float32 precision.
            let mut s = [0.0f64; 4];
            let plane = &x[p * hw..(p + 1) * hw];
            let mut chunks = plane.chunks_exact(4);
            for ch in &mut chunks {
                for j in 0..4 {
                    s[j] += ch[j] as f64;
                }
            }
            let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
            let mean = ((s[0] + s[1]) + (s[2] + s[3]) + tail) / hw as f64;
            // SAFETY: y[p] for p in p0..p1 is written by this task only (p < planes).
            unsafe { *yp.get().add(p) = mean as f32 };
        }
    });
}
