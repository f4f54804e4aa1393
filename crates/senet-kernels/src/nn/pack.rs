//! Packing of B, the implicit im2col matrix of one group (batch folded into the columns), into the
//! microkernel's panels `[kc][NR]` (see `gemm.rs`), one K block at a time.
//!
//! Packing is the convolution's overhead: each packed value feeds only `MC` multiply-adds
//! per value, so it must cost a few cycles per panel row, not per value. Rows of
//! an output row are short (one output row of 7–56 positions, split at panel edges), so
//! tails use masked moves on AVX-512 instead of scalar loops or `memcpy` calls, and
//! stride 2 (the stem, downsampling 3×3 and 1×1) gathers even lanes with a permute.

use super::gemm::{GemmIsa, Geom};
use crate::simd::SimdLevel;

fn div_up(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// Packs rows `k0..k0+kc` × columns `j0..j0+ncols` of one group's implicit im2col
/// matrix into `npan` panels `[kc][nr]` at `dst`, zero-filling columns past `ncols`.
/// Columns are batch-folded: column j is position j % (oh·ow) of image j / (oh·ow).
///
/// # Safety
/// `x` points at the group's first input channel of image 0 (the whole batch, n·cin·h·w
/// floats from the tensor start, readable); `dst` holds npan·kc·nr floats; `tmp` (scratch
/// for one row) ncols floats; the columns lie inside n·oh·ow.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_b<V: GemmIsa>(
    dst: *mut f32,
    tmp: *mut f32,
    x: *const f32,
    g: &Geom,
    k0: usize,
    kc: usize,
    j0: usize,
    ncols: usize,
    npan: usize,
    nr: usize,
) {
    let hw = g.h * g.w;
    let khw = g.kh * g.kw;
    let s = g.stride;
    let nsp = g.nsp();
    let istride = g.cin * hw;
    let (img0, l0) = (j0 / nsp, j0 % nsp);
    if g.is_pointwise() && l0 + ncols <= nsp {
        // One image, B is x itself: copy panel rows straight from it.
        let xi = x.add(img0 * istride + l0);
        for kk in 0..kc {
            let src = xi.add((k0 + kk) * hw);
            for jp in 0..npan {
                let cnt = nr.min(ncols - jp * nr);
                let d = dst.add((jp * kc + kk) * nr);
                copy::<V>(src.add(jp * nr), d, cnt);
                zero::<V>(d.add(cnt), nr - cnt);
            }
        }
        return;
    }
    // Divisions hoisted out of the (k row × panel) loop: they cost more than a panel
    // row's copy.
    let (mut ci, mut ky, mut kx) = (k0 / khw, (k0 % khw) / g.kw, k0 % g.kw);
    let (oy0, ox0) = (l0 / g.ow, l0 % g.ow);
    for kk in 0..kc {
        // Output columns whose input column is inside the image: ox·s + kx − pad ∈ [0, w).
        let ox_lo = if kx >= g.pad { 0 } else { div_up(g.pad - kx, s) };
        let ox_hi = if g.w + g.pad > kx { div_up(g.w + g.pad - kx, s).min(g.ow) } else { 0 };
        // Two passes: the whole row into `tmp` (one segment per output row, one piece per
        // image), then panel-sized copies; cheaper than cutting output rows at panel edges.
        let (mut img, mut jt, mut oy, mut ox) = (img0, 0, oy0, ox0);
        while jt < ncols {
            let len = (ncols - jt).min(nsp - (oy * g.ow + ox));
            let x_c = x.add(img * istride + ci * hw);
            if g.is_pointwise() {
                copy::<V>(x_c.add(oy * g.ow + ox), tmp.add(jt), len);
            } else {
                let row = Row { x_c, ky, kx, ox_lo, ox_hi };
                fill_patch_row::<V>(tmp.add(jt), &row, g, oy, ox, len);
            }
            jt += len;
            img += 1;
            oy = 0;
            ox = 0;
        }
        for jp in 0..npan {
            let cnt = nr.min(ncols - jp * nr);
            let d = dst.add((jp * kc + kk) * nr);
            copy::<V>(tmp.add(jp * nr), d, cnt);
            zero::<V>(d.add(cnt), nr - cnt);
        }
        kx += 1;
        if kx == g.kw {
            kx = 0;
            ky += 1;
            if ky == g.kh {
                ky = 0;
                ci += 1;
            }
        }
    }
}

/// One row (ci, ky, kx) of the im2col matrix: the input channel and the range of output
/// columns `ox_lo..ox_hi` whose input column lies inside the image.
struct Row {
    x_c: *const f32,
    ky: usize,
    kx: usize,
    ox_lo: usize,
    ox_hi: usize,
}

/// `d[j] = x_c[oy·s − pad + ky, ox·s − pad + kx]` (0 outside the image) for `cnt` output
/// positions starting at (oy, ox), running on into the next output rows.
///
/// # Safety
/// `r.x_c` points at one input channel (h·w floats), `d` has `cnt` floats, and the
/// positions are inside the output (flat index + cnt ≤ oh·ow).
#[inline(always)]
unsafe fn fill_patch_row<V: GemmIsa>(mut d: *mut f32, r: &Row, g: &Geom, mut oy: usize, mut ox: usize, cnt: usize) {
    let s = g.stride;
    let mut left = cnt;
    while left > 0 {
        let seg = left.min(g.ow - ox);
        let iy = (oy * s + r.ky) as isize - g.pad as isize;
        if iy < 0 || iy >= g.h as isize {
            zero::<V>(d, seg);
        } else {
            let row = r.x_c.add(iy as usize * g.w);
            let lo = r.ox_lo.clamp(ox, ox + seg);
            let hi = r.ox_hi.clamp(lo, ox + seg);
            zero::<V>(d, lo - ox);
            if hi > lo {
                // lo ≥ ox_lo, so ix = lo·s + kx − pad ≥ 0; hi ≤ ox_hi keeps ix < w.
                let src = row.add(lo * s + r.kx - g.pad);
                let dd = d.add(lo - ox);
                if s == 1 {
                    copy::<V>(src, dd, hi - lo);
                } else {
                    gather::<V>(src, dd, hi - lo, s);
                }
            }
            zero::<V>(d.add(hi - ox), ox + seg - hi);
        }
        d = d.add(seg);
        left -= seg;
        oy += 1;
        ox = 0;
    }
}

/// Copies `n` floats: vector moves, then one masked move on AVX-512 (packing copies are
/// short, where a `memcpy` call or a scalar tail costs more than the copy).
///
/// # Safety
/// `src` and `dst` hold `n` floats and do not overlap; V's ISA is available.
#[inline(always)]
unsafe fn copy<V: GemmIsa>(src: *const f32, dst: *mut f32, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if V::LEVEL == SimdLevel::Avx512 {
        return x86::copy(src, dst, n);
    }
    let mut i = 0;
    while i + V::LANES <= n {
        V::load(src.add(i)).store(dst.add(i));
        i += V::LANES;
    }
    while i < n {
        *dst.add(i) = *src.add(i);
        i += 1;
    }
}

/// Writes `n` zeros (see [`copy`]).
///
/// # Safety
/// `dst` holds `n` floats; V's ISA is available.
#[inline(always)]
unsafe fn zero<V: GemmIsa>(dst: *mut f32, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if V::LEVEL == SimdLevel::Avx512 {
        return x86::zero(dst, n);
    }
    let mut i = 0;
    while i + V::LANES <= n {
        V::zero().store(dst.add(i));
        i += V::LANES;
    }
    while i < n {
        *dst.add(i) = 0.0;
        i += 1;
    }
}

/// `dst[j] = src[j·s]` for j < n.
///
/// # Safety
/// `src` holds (n−1)·s+1 floats, `dst` n; V's ISA is available.
#[inline(always)]
pub(super) unsafe fn gather<V: GemmIsa>(src: *const f32, dst: *mut f32, n: usize, s: usize) {
    #[cfg(target_arch = "x86_64")]
    if V::LEVEL == SimdLevel::Avx512 && s == 2 {
        return x86::gather2(src, dst, n);
    }
    for j in 0..n {
        *dst.add(j) = *src.add(j * s);
    }
}

/// AVX-512 packing moves. Masked loads do not touch (or fault on) masked-off elements, so
/// no access leaves the `n` (or (n−1)·2+1) floats the caller owns.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline(always)]
    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }

    // Every move is masked, even full ones: a plain load/store loop would be turned into
    // a `memcpy`/`memset` call by LLVM, which costs more than these 1–4 moves.

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn copy(src: *const f32, dst: *mut f32, n: usize) {
        let mut i = 0;
        while i < n {
            let m = mask(n - i);
            _mm512_mask_storeu_ps(dst.add(i), m, _mm512_maskz_loadu_ps(m, src.add(i)));
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn zero(dst: *mut f32, n: usize) {
        let z = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            _mm512_mask_storeu_ps(dst.add(i), mask(n - i), z);
            i += 16;
        }
    }

    /// `dst[j] = src[2j]`: two loads of 16 and one two-source permute per 16 outputs.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn gather2(src: *const f32, dst: *mut f32, n: usize) {
        let idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let mut j = 0;
        while j < n {
            let m = n - j; // outputs left; they read 2m − 1 source floats
            let s = src.add(2 * j);
            let need = 2 * m.min(16) - 1;
            let lo = _mm512_maskz_loadu_ps(mask(need), s);
            let hi = _mm512_maskz_loadu_ps(mask(need.saturating_sub(16)), s.add(16));
            let v = _mm512_permutex2var_ps(lo, idx, hi);
            if m >= 16 {
                _mm512_storeu_ps(dst.add(j), v);
            } else {
                _mm512_mask_storeu_ps(dst.add(j), mask(m), v);
            }
            j += 16;
        }
    }
}
