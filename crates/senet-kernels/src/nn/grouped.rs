//! Grouped convolution (ResNeXt / SENet-154 3×3, depthwise) computed directly.
//!
//! With few channels per group (4–32 in SE-ResNeXt) the GEMM formulation is all
//! overhead: a packed im2col value feeds only cout/groups multiply-adds and the MR-row
//! tile is mostly padding. Here each task takes one (image, group), copies the group's
//! input once into a zero-padded, stride-phase-split buffer, and accumulates a register
//! block of CB output channels × 2 vectors of output positions over (ci, ky, kx).
//!
//! Phase split: padded row `r` is stored as `s` phases, phase `p` holding `r[j·s + p]`.
//! The input of output column `ox` and tap `kx` is then phase `kx % s`, index
//! `ox + kx / s`: consecutive output columns read consecutive floats for any stride, so
//! every load is a plain vector load.

use super::for_each_task;
use super::gemm::{Call, GemmIsa, Geom};
use super::pack::gather;
use crate::simd::SimdLevel;
use crate::vec::Vf32;
use std::cell::RefCell;

/// Output channels per register block with two vectors of positions (2·CB
/// accumulators, 2 loads and CB broadcasts per tap); 2·CB channels with one vector.
const CB: usize = 4;

thread_local! {
    /// Per-thread padded-input buffer, grown to the largest group seen, then reused.
    static PAD: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Sizes of the padded, phase-split copy of one group's input.
#[derive(Clone, Copy)]
struct Padded {
    hp: usize,
    /// Floats per phase of a row: ceil((w + 2·pad) / stride).
    wq: usize,
}

impl Padded {
    fn of(g: &Geom) -> Padded {
        Padded { hp: g.h + 2 * g.pad, wq: (g.w + 2 * g.pad).div_ceil(g.stride) }
    }
    fn row(&self, g: &Geom) -> usize {
        self.wq * g.stride
    }
    /// Floats of the buffer, with slack for the vector loads of the last row, whose
    /// lanes past the output row read (and discard) whatever follows.
    fn len(&self, g: &Geom) -> usize {
        (g.cin / g.groups) * self.hp * self.row(g) + 2 * 16 + g.kw
    }
}

/// `y = act(conv(x) + bias [+ res])` for a grouped convolution; `c.a` holds the plain
/// PyTorch-order weights [cout, cin/groups, kh, kw].
pub(crate) fn conv(level: SimdLevel, c: &Call) {
    let g = &c.g;
    if g.n == 0 || g.nsp() == 0 {
        return;
    }
    let pd = Padded::of(g);
    // Offset of tap (ky, kx) from output position (oy, ox) = (0, 0) in a channel of the
    // padded buffer: row ky, phase kx % s, index kx / s.
    let taps: Vec<usize> = (0..g.kh * g.kw)
        .map(|t| (t / g.kw) * pd.row(g) + (t % g.kw % g.stride) * pd.wq + t % g.kw / g.stride)
        .collect();
    let taps = &taps[..];
    let flops = g.n * g.cout * g.nsp() * g.k_g();
    for_each_task(g.n * g.groups, flops >= (1 << 20), |t| {
        PAD.with(|buf| {
            let mut buf = buf.borrow_mut();
            let need = pd.len(g);
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            run_task(level, c, pd, taps, t, &mut buf[..need]);
        })
    });
}

fn run_task(level: SimdLevel, c: &Call, pd: Padded, taps: &[usize], t: usize, s: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(c: &Call, pd: Padded, taps: &[usize], t: usize, s: &mut [f32]) {
        unsafe { task::<crate::vec::Avx512>(c, pd, taps, t, s) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(c: &Call, pd: Padded, taps: &[usize], t: usize, s: &mut [f32]) {
        unsafe { task::<crate::vec::Avx2>(c, pd, taps, t, s) }
    }
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(c: &Call, pd: Padded, taps: &[usize], t: usize, s: &mut [f32]) {
        unsafe { task::<crate::vec::Neon>(c, pd, taps, t, s) }
    }
    match level {
        // SAFETY: `level` comes from `simd::level()` (supported by the CPU); `c` was
        // validated by `Conv2d::run` (see `task`).
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { avx512(c, pd, taps, t, s) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2(c, pd, taps, t, s) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => unsafe { neon(c, pd, taps, t, s) },
        // SAFETY: plain scalar code; `c` validated as above.
        _ => unsafe { task::<f32>(c, pd, taps, t, s) },
    }
}

/// One (image, group).
///
/// # Safety
/// `c`'s pointers cover the full tensors of `c.g` (checked by `Conv2d::run`), `c.a` is
/// the plain weight tensor, `xp` has `pd.len()` floats, and V's ISA is available.
#[inline(always)]
unsafe fn task<V: GemmIsa>(c: &Call, pd: Padded, taps: &[usize], t: usize, xp: &mut [f32]) {
    let g = &c.g;
    let (gi, img) = (t % g.groups, t / g.groups);
    let (cig, mg, kg, nsp) = (g.cin / g.groups, g.m_g(), g.k_g(), g.nsp());
    let (s, prow) = (g.stride, pd.row(g));
    assert!(xp.len() >= pd.len(g) && c.a.len() >= g.cout * kg);

    // Padded, phase-split copy of the group's input channels.
    xp.fill(0.0);
    let x = &std::slice::from_raw_parts(c.x, g.n * g.cin * g.h * g.w)[(img * g.cin + gi * cig) * g.h * g.w..][..cig * g.h * g.w];
    for ci in 0..cig {
        for iy in 0..g.h {
            let src = &x[(ci * g.h + iy) * g.w..][..g.w];
            let dst = &mut xp[(ci * pd.hp + iy + g.pad) * prow..][..prow];
            if s == 1 {
                dst[g.pad..g.pad + g.w].copy_from_slice(src);
            } else {
                // Phase p holds padded columns j = q·s + p, i.e. input columns
                // ix = q·s + p − pad: a strided gather over the q with 0 ≤ ix < w.
                for p in 0..s {
                    let q_lo = if p >= g.pad { 0 } else { (g.pad - p).div_ceil(s) };
                    let q_hi = (g.w + g.pad).saturating_sub(p).div_ceil(s).min(pd.wq);
                    if q_hi > q_lo {
                        // SAFETY: ix runs over q_lo·s + p − pad ..= (q_hi−1)·s + p − pad,
                        // inside 0..w; q_lo..q_hi is inside the phase's wq floats.
                        gather::<V>(src.as_ptr().add(q_lo * s + p - g.pad), dst.as_mut_ptr().add(p * pd.wq + q_lo), q_hi - q_lo, s);
                    }
                }
            }
        }
    }

    // SAFETY (pointer arithmetic below): y/res offsets stay inside this image and group's
    // channels (mg·nsp floats), which no other task writes; xp reads stay inside xp by
    // the slack of `Padded::len`; weight reads inside the group's mg·kg weights.
    let yoff = (img * g.cout + gi * mg) * nsp;
    let out = Out { y: c.y.add(yoff), res: if c.res.is_null() { c.res } else { c.res.add(yoff) }, relu: c.relu };
    let w = c.a.as_ptr().add(gi * mg * kg);
    let bias = c.bias.as_ptr().add(gi * mg);
    let xp = xp.as_ptr();
    let mut co = 0;
    if g.ow <= V::LANES {
        // Narrow maps (7×7, 14×14 on AVX-512): one vector per row, more channels.
        while co + 2 * CB <= mg {
            block::<V, { 2 * CB }, 1>(g, pd, taps, xp, w.add(co * kg), bias.add(co), &out, co);
            co += 2 * CB;
        }
        while co < mg {
            block::<V, 1, 1>(g, pd, taps, xp, w.add(co * kg), bias.add(co), &out, co);
            co += 1;
        }
    } else {
        while co + CB <= mg {
            block::<V, CB, 2>(g, pd, taps, xp, w.add(co * kg), bias.add(co), &out, co);
            co += CB;
        }
        while co < mg {
            block::<V, 1, 2>(g, pd, taps, xp, w.add(co * kg), bias.add(co), &out, co);
            co += 1;
        }
    }
}

/// Where one (image, group)'s output rows go.
struct Out {
    y: *mut f32,
    res: *const f32,
    relu: bool,
}

/// Output channels `co..co+NB` of the group: every output row, NV vectors of positions
/// at a time. Each output accumulates over (ci, ky, kx) in increasing order, then the
/// epilogue `act(acc + bias [+ res])`.
///
/// # Safety
/// As [`task`]; `w` points at the block's first weight row, `bias` at its first bias,
/// `taps` holds kh·kw offsets inside a padded channel.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<V: Vf32, const NB: usize, const NV: usize>(
    g: &Geom,
    pd: Padded,
    taps: &[usize],
    xp: *const f32,
    w: *const f32,
    bias: *const f32,
    o: &Out,
    co: usize,
) {
    let l = V::LANES;
    let span = NV * l;
    let (cig, kg, nsp, khw) = (g.cin / g.groups, g.k_g(), g.nsp(), g.kh * g.kw);
    let plane = pd.hp * pd.row(g);
    for oy in 0..g.oh {
        let rowbase = xp.add(oy * g.stride * pd.row(g));
        let mut ox0 = 0;
        while ox0 < g.ow {
            let mut acc = [[V::zero(); NV]; NB];
            for ci in 0..cig {
                let base = rowbase.add(ci * plane + ox0);
                let wci = w.add(ci * khw);
                for (t, &off) in taps.iter().enumerate() {
                    let p = base.add(off);
                    let mut xv = [V::zero(); NV];
                    for (v, xv) in xv.iter_mut().enumerate() {
                        *xv = V::load(p.add(v * l));
                    }
                    for (b, acc) in acc.iter_mut().enumerate() {
                        let wv = V::splat(*wci.add(b * kg + t));
                        for v in 0..NV {
                            acc[v] = wv.mul_add(xv[v], acc[v]);
                        }
                    }
                }
            }
            let n = (g.ow - ox0).min(span);
            for (b, acc) in acc.iter().enumerate() {
                let off = (co + b) * nsp + oy * g.ow + ox0;
                let bv = V::splat(*bias.add(b));
                if n == span {
                    for (v, acc) in acc.iter().enumerate() {
                        let mut r = acc.add(bv);
                        if !o.res.is_null() {
                            r = r.add(V::load(o.res.add(off + v * l)));
                        }
                        if o.relu {
                            r = r.max(V::zero());
                        }
                        r.store(o.y.add(off + v * l));
                    }
                } else {
                    // Row tail: through a stack buffer, so nothing outside the row is
                    // touched. Same arithmetic as the full path, element by element.
                    const { assert!(NV * V::LANES <= 32) };
                    let mut t = [0.0f32; 32];
                    for (v, acc) in acc.iter().enumerate() {
                        acc.add(bv).store(t.as_mut_ptr().add(v * l));
                    }
                    for (j, t) in t.iter_mut().enumerate().take(n) {
                        if !o.res.is_null() {
                            *t += *o.res.add(off + j);
                        }
                        if o.relu {
                            *t = Vf32::max(*t, 0.0);
                        }
                        *o.y.add(off + j) = *t;
                    }
                }
            }
            ox0 += span;
        }
    }
}
