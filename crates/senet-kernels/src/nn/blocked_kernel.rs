//! The direct-convolution microkernel of [`super::ConvBlk`]: one generic body, compiled
//! per ISA and per register tile (RH output rows × RW output pixels × NV output-channel
//! vectors).
//!
//! A tile call computes, for RW output pixels of one output row (of two rows, RH = 2)
//! and NB 16-channel output blocks, `y = act(Σ_{cb, ky, kx, ci} x · w + bias [+ res])`. The accumulators live in
//! registers for the whole reduction: per input channel it loads the NB·16 weights once
//! (NV vectors) and broadcasts one input scalar per pixel into RW·NV FMAs. Borders are
//! not the kernel's business: the caller restricts ky to the valid rows (or pads rows
//! too, for two-row tiles) and hands it an input whose columns are zero padded, so the
//! hot loop has no branch. One call may run several consecutive tiles of a row
//! (`Tile::ntiles`), which spreads the call's set-up over them.
//!
//! Determinism: each output is accumulated in the fixed order (cb, ky, kx, ci) whatever
//! the tile it belongs to, so tiling and threading never change a result bit.

use crate::simd::SimdLevel;
use crate::vec::Vf32;

/// Operands of one tile call. Every stride is in floats.
#[derive(Clone, Copy)]
pub(super) struct Tile {
    /// Input at (first input block, first valid ky row, first pixel's first column).
    pub x: *const f32,
    /// Weights at (first input block, first valid ky, kx 0, ci 0) of the tile's output
    /// blocks, interleaved: `[cb][ky][kx][cpb][NB·16]`, so the NB·16 weights of one
    /// input channel are one contiguous run (one prefetch stream, no 4 KiB aliasing
    /// between blocks).
    pub w: *const f32,
    /// 16·NB bias values of the tile's output blocks.
    pub bias: *const f32,
    /// Residual at the tile's first output (same layout as y), or null.
    pub res: *const f32,
    /// SE gates of the tile's NB·16 output channels, or null: the epilogue then computes
    /// `act((acc + bias) · gate [+ res])`, rounding as the separate gate pass does.
    pub gate: *const f32,
    /// Output at the tile's first output (Blk16: block stride `y_ob`, pixel stride 16).
    pub y: *mut f32,
    /// Input blocks, channels per block, valid kernel rows, kernel columns.
    pub ncb: usize,
    pub cpb: usize,
    pub nky: usize,
    pub kw: usize,
    /// Input strides: per block, per kernel row, per kernel column, per channel, per
    /// output pixel.
    pub x_cb: usize,
    pub x_row: usize,
    pub x_col: usize,
    pub x_ci: usize,
    pub x_px: usize,
    /// Weight strides: per input block, per kernel row.
    pub w_cb: usize,
    pub w_ky: usize,
    /// Output (and residual) stride per output block.
    pub y_ob: usize,
    /// Two-row tiles only: input floats between the tile's two output rows (stride ×
    /// input row), and output floats between them.
    pub x_orow: usize,
    pub y_orow: usize,
    pub relu: bool,
    /// Software prefetch of the weights this many input blocks ahead (0: none), for
    /// long 1×1 reductions whose weights stream from L2.
    pub pf: usize,
    /// Tiles in this call (≥ 1): consecutive tiles of the same width along an output
    /// row, their inputs `x_tile` floats apart and their outputs (and residuals) `y_tile`
    /// floats apart. One call for a run of tiles saves the per-call set-up, which short
    /// reductions (1×1 from 64 channels: 64 steps per tile) otherwise pay per tile.
    pub ntiles: usize,
    pub x_tile: usize,
    pub y_tile: usize,
}

impl Tile {
    /// Tile `i` of the call's run (`i < ntiles`), as a single tile.
    #[inline(always)]
    unsafe fn nth(&self, i: usize) -> Tile {
        Tile {
            // Wrapping: a tile with no valid kernel row (nky = 0) never reads its x.
            x: self.x.wrapping_add(i * self.x_tile),
            y: self.y.add(i * self.y_tile),
            res: if self.res.is_null() { self.res } else { self.res.add(i * self.y_tile) },
            ntiles: 1,
            ..*self
        }
    }
}

/// A compiled tile kernel.
///
/// # Safety
/// Every address the [`Tile`] strides describe must be readable (x, w, bias, res) or
/// writable (y), the ISA must be supported by the CPU (guaranteed by [`kernels`], which
/// only hands out the kernels of `simd::level()`), and no other thread may write the
/// tile's outputs meanwhile.
pub(super) type TileFn = unsafe fn(&Tile);

/// Output pixels × output-channel vectors of one tile, all in registers: RH output
/// rows (input rows `x_orow` apart, output rows `y_orow` apart) × RW pixels × NV vectors.
/// `PX` is the input pixel stride when known at compile time (0: use `t.x_px`): with a
/// constant stride every broadcast address is base + immediate, which saves the integer
/// instructions that otherwise crowd the 4-wide front end (~15% on the 14×2 tile).
#[inline(always)]
unsafe fn tile_k<V: Vf32, const RH: usize, const RW: usize, const NV: usize, const PX: usize>(t: &Tile) {
    for i in 0..t.ntiles {
        tile_k1::<V, RH, RW, NV, PX>(&t.nth(i));
    }
}

/// One tile of [`tile_k`].
#[inline(always)]
unsafe fn tile_k1<V: Vf32, const RH: usize, const RW: usize, const NV: usize, const PX: usize>(t: &Tile) {
    let x_px = if PX == 0 { t.x_px } else { PX };
    // Constant-stride tables are only used for full 16-channel input blocks; a constant
    // trip count lets the channel loop unroll (no loop-exit mispredict every 16 steps).
    let cpb = match PX {
        0 => t.cpb,
        STEM_PX => STEM_CPB,
        _ => 16,
    };
    let mut acc = [[[V::zero(); NV]; RW]; RH];
    let (kw, nky) = (t.kw, t.nky);
    for cb in 0..t.ncb {
        // Prefetch only inside this tile's weights (an address past the buffer may be
        // unmapped, and a prefetch there costs a page walk).
        #[cfg(target_arch = "x86_64")]
        let pf = t.pf != 0 && cb + t.pf < t.ncb;
        for ky in 0..nky {
            let xr = t.x.add(cb * t.x_cb + ky * t.x_row);
            let wr = t.w.add(cb * t.w_cb + ky * t.w_ky);
            for kx in 0..kw {
                let xk = xr.add(kx * t.x_col);
                let wk = wr.add(kx * cpb * NV * V::LANES);
                for ci in 0..cpb {
                    let wc = wk.add(ci * NV * V::LANES);
                    #[cfg(target_arch = "x86_64")]
                    if pf {
                        // One cache line per 16 weights, `pf` input blocks ahead.
                        for j in 0..NV * V::LANES / 16 {
                            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(wc.add(t.pf * t.w_cb + j * 16) as *const i8);
                        }
                    }
                    let mut wv = [V::zero(); NV];
                    for (j, v) in wv.iter_mut().enumerate() {
                        *v = V::load(wc.add(j * V::LANES));
                    }
                    let xc = xk.add(ci * t.x_ci);
                    for (r, ar) in acc.iter_mut().enumerate() {
                        let xrc = xc.add(r * t.x_orow);
                        for (p, a) in ar.iter_mut().enumerate() {
                            let xv = V::splat(*xrc.add(p * x_px));
                            for j in 0..NV {
                                a[j] = xv.mul_add(wv[j], a[j]);
                            }
                        }
                    }
                }
            }
        }
    }
    store_tile::<V, RH, RW, NV>(t, &acc);
}

/// The tile's epilogue: `y = act((acc + bias) [· gate] [+ res])` for every accumulator.
#[inline(always)]
unsafe fn store_tile<V: Vf32, const RH: usize, const RW: usize, const NV: usize>(t: &Tile, acc: &[[[V; NV]; RW]; RH]) {
    let vpb = 16 / V::LANES;
    for (r, ar) in acc.iter().enumerate() {
        for (p, a) in ar.iter().enumerate() {
            for (j, &s) in a.iter().enumerate() {
                let off = r * t.y_orow + (j / vpb) * t.y_ob + p * 16 + (j % vpb) * V::LANES;
                let mut v = s.add(V::load(t.bias.add((j / vpb) * 16 + (j % vpb) * V::LANES)));
                if !t.gate.is_null() {
                    v = v.mul(V::load(t.gate.add((j / vpb) * 16 + (j % vpb) * V::LANES)));
                }
                if !t.res.is_null() {
                    v = v.add(V::load(t.res.add(off)));
                }
                if t.relu {
                    v = v.max(V::zero());
                }
                v.store(t.y.add(off));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(feature = "emulate-avx512"), target_feature(enable = "avx512f"))]
unsafe fn avx512<const RW: usize, const NV: usize, const PX: usize>(t: &Tile) {
    tile_k::<crate::vec::Avx512, 1, RW, NV, PX>(t)
}

/// Two output rows per tile (for maps of ≤ 8 columns: twice the FMAs per weight load).
#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(feature = "emulate-avx512"), target_feature(enable = "avx512f"))]
unsafe fn avx512_rows2<const RW: usize, const NV: usize, const PX: usize>(t: &Tile) {
    tile_k::<crate::vec::Avx512, 2, RW, NV, PX>(t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const RW: usize, const NV: usize, const PX: usize>(t: &Tile) {
    tile_k::<crate::vec::Avx2, 1, RW, NV, PX>(t)
}

/// Defines `$name<PX, WS>(x, w, a: &mut [__m256; 2·$n])`: sixteen reduction steps of
/// an AVX2 tile of `$n` pixels × 16 channels, in inline assembly: for ci in 0..16,
/// `a[2p + j] += x[p·PX + ci] · w[ci·WS + 8j .. +8]` (p < $n, j < 2) as `vfmadd231ps`
/// (= `x.mul_add(w, a)`, the generic kernels' operation, so results are bitwise theirs),
/// ci in order. Every offset inside a step is a constant: 2 + 3·$n macro-ops per step
/// (2 weight loads, $n broadcasts, 2·$n FMAs; see `avx2_asm!` for why that matters).
/// The 16 steps run as a loop of two 8-step halves (3 more macro-ops per half: two
/// pointer adds, a fused decrement-and-branch) rather than fully unrolled: the body is
/// then ~1 KB instead of ~2 KB of code. On the shared Zen 3 host, where a tenant on
/// the sibling SMT thread also fills the core's op cache, the smaller loop ran
/// seresnet50 in 0.90–0.99× the time of the unrolled one (`bench/ab.mjs`, batch 1 and
/// 8, 1 and 2 threads; a 4-step body read 0.93–1.0×, a 2-step one 1.01–1.04×).
/// Shared with the Winograd GEMM (`WS` = its weight row).
///
/// Safety of the generated function: AVX2 and FMA available; `x[p·PX + ci]` (p < $n,
/// ci < 16) and `w[ci·WS .. ci·WS + 16]` (ci < 16) readable.
#[cfg(target_arch = "x86_64")]
macro_rules! avx2_step16 {
    ($name:ident, $n:literal, [$(($p:literal, $b:literal, $i0:literal, $r0:tt, $i1:literal, $r1:tt)),*]) => {
        /// Sixteen reduction steps of an AVX2 tile (see `avx2_step16!`).
        ///
        /// # Safety
        /// AVX2 and FMA available; `x[p·PX + ci]` (p < the tile's pixels, ci < 16) and
        /// `w[ci·WS .. ci·WS + 16]` (ci < 16) readable.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        pub unsafe fn $name<const PX: usize, const WS: usize>(
            x: *const f32,
            w: *const f32,
            a: &mut [core::arch::x86_64::__m256; 2 * $n],
        ) {
            core::arch::asm!(
                "2:",
                ".irp ci, 0,1,2,3,4,5,6,7",
                "vmovups ymm12, ymmword ptr [{w} + \\ci*{ws}]",
                "vmovups ymm13, ymmword ptr [{w} + \\ci*{ws} + 32]",
                $(
                    concat!("vbroadcastss ", $b, ", dword ptr [{x} + \\ci*4 + ", $p, "*{px}]"),
                    concat!("vfmadd231ps ", $r0, ", ", $b, ", ymm12"),
                    concat!("vfmadd231ps ", $r1, ", ", $b, ", ymm13"),
                )*
                ".endr",
                "add {x}, 32",
                "add {w}, {ws4}",
                "dec {k:e}",
                "jnz 2b",
                x = inout(reg) x => _,
                w = inout(reg) w => _,
                k = inout(reg) 2u32 => _,
                px = const PX * 4,
                ws = const WS * 4,
                ws4 = const WS * 32,
                $(inout($r0) a[$i0], inout($r1) a[$i1],)*
                out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                options(nostack, readonly),
            );
        }
    };
}
#[cfg(target_arch = "x86_64")]
avx2_step16!(
    avx2_step16_6,
    6,
    [(0, "ymm14", 0, "ymm0", 1, "ymm1"), (1, "ymm15", 2, "ymm2", 3, "ymm3"), (2, "ymm14", 4, "ymm4", 5, "ymm5"), (3, "ymm15", 6, "ymm6", 7, "ymm7"), (4, "ymm14", 8, "ymm8", 9, "ymm9"), (5, "ymm15", 10, "ymm10", 11, "ymm11")]
);
#[cfg(target_arch = "x86_64")]
avx2_step16!(
    avx2_step16_5,
    5,
    [(0, "ymm14", 0, "ymm0", 1, "ymm1"), (1, "ymm15", 2, "ymm2", 3, "ymm3"), (2, "ymm14", 4, "ymm4", 5, "ymm5"), (3, "ymm15", 6, "ymm6", 7, "ymm7"), (4, "ymm14", 8, "ymm8", 9, "ymm9")]
);
#[cfg(target_arch = "x86_64")]
avx2_step16!(
    avx2_step16_4,
    4,
    [(0, "ymm14", 0, "ymm0", 1, "ymm1"), (1, "ymm15", 2, "ymm2", 3, "ymm3"), (2, "ymm14", 4, "ymm4", 5, "ymm5"), (3, "ymm15", 6, "ymm6", 7, "ymm7")]
);

/// Defines the AVX2 tile kernel `$name<PX>` of `$n` pixels × 16 channels over full
/// 16-channel input blocks at a constant pixel stride `PX` (16 or 32 floats):
/// [`tile_k`]`::<Avx2, 1, $n, 2, PX>` with each block's 16 reduction steps in assembly
/// (`$step`).
///
/// Why: per step the tile needs 2 weight loads, $n broadcasts and 2·$n FMAs; compiled
/// from `tile_k` the loop adds ~6–10 integer instructions per step (address arithmetic,
/// loop control). A Zen 3 core dispatches 6 macro-ops per cycle but alternates between
/// SMT threads, so when another tenant runs on the sibling thread of a shared host each
/// thread gets ~3 per cycle and the kernel turns dispatch-bound rather than FMA-bound:
/// the 20 macro-ops of a 6-pixel step fit that budget (≈ 6.7 cycles for 12 FMAs), the
/// ~26–30 of the compiled loop do not. Measured on seresnet50 (Zen 3, shared host,
/// alternated with the compiled kernels): batch 1, 1 thread 0.87–0.91× the time.
///
/// Results are bitwise those of `tile_k`: the same FMAs in the same order (cb, ky, kx,
/// ci), the same epilogue. Prefetches: the same weights, and also the tile's input
/// pixels of the block as far ahead (a new block's first step otherwise waited for its
/// pixels' lines from L2: seresnet50 batch 1, 1 and 2 threads, 0.95× the time).
///
/// Safety: as [`TileFn`]; additionally `t.cpb == 16` and `t.x_ci == 1` (a Blk16 input,
/// which the constant-stride tables imply).
#[cfg(target_arch = "x86_64")]
macro_rules! avx2_asm {
    ($name:ident, $n:literal, $step:ident, [$($i:literal),*]) => {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name<const PX: usize>(run: &Tile) {
            use core::arch::x86_64::{__m256, _mm256_setzero_ps, _mm_prefetch, _MM_HINT_T0};
            debug_assert!(run.cpb == 16 && run.x_ci == 1);
            for i in 0..run.ntiles {
                let t = &run.nth(i);
                let mut a: [__m256; 2 * $n] = [_mm256_setzero_ps(); 2 * $n];
                if t.nky == 1 && t.kw == 1 {
                    // 1×1 (and tap planes): one step block per input block, so a flat
                    // loop with two moving pointers (the general loop nest below keeps
                    // ~25 bookkeeping macro-ops per block, some of them spills).
                    // Blocks with a block `t.pf` ahead prefetch it as below.
                    let (mut x, mut w) = (t.x, t.w);
                    let npf = if t.pf != 0 { t.ncb.saturating_sub(t.pf) } else { 0 };
                    let (xa, wa) = (t.pf * t.x_cb, t.pf * t.w_cb);
                    for _ in 0..npf {
                        if i == 0 {
                            for ci in 0..16 {
                                _mm_prefetch::<_MM_HINT_T0>(w.add(wa + ci * 16) as *const i8);
                            }
                        }
                        for p in 0..$n {
                            _mm_prefetch::<_MM_HINT_T0>(x.add(xa + p * PX) as *const i8);
                        }
                        // SAFETY: as below (ky = kx = 0).
                        $step::<PX, 16>(x, w, &mut a);
                        x = x.add(t.x_cb);
                        w = w.add(t.w_cb);
                    }
                    for _ in npf..t.ncb {
                        // SAFETY: as below (ky = kx = 0).
                        $step::<PX, 16>(x, w, &mut a);
                        x = x.add(t.x_cb);
                        w = w.add(t.w_cb);
                    }
                } else {
                    for cb in 0..t.ncb {
                        // Prefetch only inside this tile's weights, as `tile_k`.
                        let pf = t.pf != 0 && cb + t.pf < t.ncb;
                        for ky in 0..t.nky {
                            let xr = t.x.add(cb * t.x_cb + ky * t.x_row);
                            let wr = t.w.add(cb * t.w_cb + ky * t.w_ky);
                            for kx in 0..t.kw {
                                let x = xr.add(kx * t.x_col);
                                let w = wr.add(kx * 16 * 16);
                                if pf {
                                    // The weights only for a run's first tile: the others
                                    // find them in L1/L2 after it (its 16 prefetches per
                                    // step block cost dispatch slots; A/B seresnet50 batch 8
                                    // 0.91–0.96× the time, batch 1 0.97–1.03×).
                                    if i == 0 {
                                        let ahead = w.add(t.pf * t.w_cb);
                                        for ci in 0..16 {
                                            _mm_prefetch::<_MM_HINT_T0>(ahead.add(ci * 16) as *const i8);
                                        }
                                    }
                                    // The input pixels of the same block ahead (one line each).
                                    let xa = x.add(t.pf * t.x_cb);
                                    for p in 0..$n {
                                        _mm_prefetch::<_MM_HINT_T0>(xa.add(p * PX) as *const i8);
                                    }
                                }
                                // SAFETY: the 16 × 16 weights at w and pixels 0..$n (stride PX) ×
                                // channels 0..16 at x lie inside the tile's operands (see `Tile`).
                                $step::<PX, 16>(x, w, &mut a);
                            }
                        }
                    }
                }
                let v = |i: usize| crate::vec::Avx2(a[i]);
                let acc = [[$([v(2 * $i), v(2 * $i + 1)]),*]];
                store_tile::<crate::vec::Avx2, 1, $n, 2>(t, &acc);
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
avx2_asm!(avx2_asm6, 6, avx2_step16_6, [0, 1, 2, 3, 4, 5]);
#[cfg(target_arch = "x86_64")]
avx2_asm!(avx2_asm5, 5, avx2_step16_5, [0, 1, 2, 3, 4]);
#[cfg(target_arch = "x86_64")]
avx2_asm!(avx2_asm4, 4, avx2_step16_4, [0, 1, 2, 3]);

/// Defines the AVX2 stem tile `$name` of `$n` pixels × 16 channels: [`tile_k`]`::<Avx2,
/// 1, $n, 2, STEM_PX>` for [`STEM_CPB`]-channel NCHW input (channel planes `x_ci` apart,
/// kernel columns one float apart), with the whole loop nest (ky, kx, ci) in assembly:
/// per tap 3 steps of 2 weight loads, $n broadcasts and 2·$n FMAs (the channel planes
/// addressed as base + plane·{0, 1, 2}), then 4 macro-ops of pointer and loop control;
/// compiled, `tile_k` spends ~26–30 macro-ops per step with runtime strides. The same
/// FMAs in the same order as `tile_k`, so bitwise its results.
///
/// Safety: as [`TileFn`]; additionally `t.cpb == STEM_CPB`, `t.x_px == STEM_PX`,
/// `t.x_col == 1`, `t.ncb == 1`, and `t.w_ky == t.kw · 48` (the stem's packing: one
/// tap's 3 × 16 weights after another).
#[cfg(target_arch = "x86_64")]
macro_rules! avx2_stem {
    ($name:ident, $n:literal, [$(($p:literal, $b:literal, $i0:literal, $r0:tt, $i1:literal, $r1:tt)),*], [$($i:literal),*]) => {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name(run: &Tile) {
            use core::arch::x86_64::{__m256, _mm256_setzero_ps};
            debug_assert!(run.cpb == STEM_CPB && run.x_px == STEM_PX && run.x_col == 1 && run.ncb == 1);
            debug_assert_eq!(run.w_ky, run.kw * STEM_CPB * 16);
            for i in 0..run.ntiles {
                let t = &run.nth(i);
                let mut a: [__m256; 2 * $n] = [_mm256_setzero_ps(); 2 * $n];
                if t.nky > 0 && t.kw > 0 {
                    // SAFETY: the taps (ky < nky, kx < kw) read pixels p·STEM_PX + kx of
                    // rows ky, channel planes 0..3, and their 3 × 16 weights: inside the
                    // tile's operands (see `Tile`).
                    core::arch::asm!(
                        "2:",
                        "mov {xk}, {xr}",
                        "mov {kx}, {kw}",
                        "3:",
                        "vmovups ymm12, ymmword ptr [{w}]",
                        "vmovups ymm13, ymmword ptr [{w} + 32]",
                        $(
                            concat!("vbroadcastss ", $b, ", dword ptr [{xk} + ", $p, "*8]"),
                            concat!("vfmadd231ps ", $r0, ", ", $b, ", ymm12"),
                            concat!("vfmadd231ps ", $r1, ", ", $b, ", ymm13"),
                        )*
                        "vmovups ymm12, ymmword ptr [{w} + 64]",
                        "vmovups ymm13, ymmword ptr [{w} + 96]",
                        $(
                            concat!("vbroadcastss ", $b, ", dword ptr [{xk} + {xci} + ", $p, "*8]"),
                            concat!("vfmadd231ps ", $r0, ", ", $b, ", ymm12"),
                            concat!("vfmadd231ps ", $r1, ", ", $b, ", ymm13"),
                        )*
                        "vmovups ymm12, ymmword ptr [{w} + 128]",
                        "vmovups ymm13, ymmword ptr [{w} + 160]",
                        $(
                            concat!("vbroadcastss ", $b, ", dword ptr [{xk} + 2*{xci} + ", $p, "*8]"),
                            concat!("vfmadd231ps ", $r0, ", ", $b, ", ymm12"),
                            concat!("vfmadd231ps ", $r1, ", ", $b, ", ymm13"),
                        )*
                        "add {xk}, 4",
                        "add {w}, 192",
                        "dec {kx}",
                        "jnz 3b",
                        "add {xr}, {xrow}",
                        "dec {ky}",
                        "jnz 2b",
                        xr = inout(reg) t.x => _,
                        w = inout(reg) t.w => _,
                        ky = inout(reg) t.nky => _,
                        kw = in(reg) t.kw,
                        xci = in(reg) t.x_ci * 4,
                        xrow = in(reg) t.x_row * 4,
                        xk = out(reg) _,
                        kx = out(reg) _,
                        $(inout($r0) a[$i0], inout($r1) a[$i1],)*
                        out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                        options(nostack, readonly),
                    );
                }
                let v = |i: usize| crate::vec::Avx2(a[i]);
                let acc = [[$([v(2 * $i), v(2 * $i + 1)]),*]];
                store_tile::<crate::vec::Avx2, 1, $n, 2>(t, &acc);
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
avx2_stem!(
    avx2_stem6,
    6,
    [(0, "ymm14", 0, "ymm0", 1, "ymm1"), (1, "ymm15", 2, "ymm2", 3, "ymm3"), (2, "ymm14", 4, "ymm4", 5, "ymm5"), (3, "ymm15", 6, "ymm6", 7, "ymm7"), (4, "ymm14", 8, "ymm8", 9, "ymm9"), (5, "ymm15", 10, "ymm10", 11, "ymm11")],
    [0, 1, 2, 3, 4, 5]
);
#[cfg(target_arch = "x86_64")]
avx2_stem!(
    avx2_stem5,
    5,
    [(0, "ymm14", 0, "ymm0", 1, "ymm1"), (1, "ymm15", 2, "ymm2", 3, "ymm3"), (2, "ymm14", 4, "ymm4", 5, "ymm5"), (3, "ymm15", 6, "ymm6", 7, "ymm7"), (4, "ymm14", 8, "ymm8", 9, "ymm9")],
    [0, 1, 2, 3, 4]
);
#[cfg(target_arch = "x86_64")]
avx2_stem!(
    avx2_stem4,
    4,
    [(0, "ymm14", 0, "ymm0", 1, "ymm1"), (1, "ymm15", 2, "ymm2", 3, "ymm3"), (2, "ymm14", 4, "ymm4", 5, "ymm5"), (3, "ymm15", 6, "ymm6", 7, "ymm7")],
    [0, 1, 2, 3]
);

unsafe fn scalar<const RW: usize, const NV: usize>(t: &Tile) {
    tile_k::<f32, 1, RW, NV, 0>(t)
}

/// The stem's constant-stride table: NCHW input of 3 channels read at stride 2 (the
/// 7×7/2 stem's 4-block tiles), so that its broadcasts are base + immediate and its
/// channel loop a constant 3 steps, like the 16-channel tables': 7×7/2 3→64 @224
/// 12–14% faster at batch 1 and 8, 1 and 2 threads (in-process A/B against the
/// runtime-stride kernel, 60 alternating runs).
const STEM_PX: usize = 2;
const STEM_CPB: usize = 3;

/// `[f::<1, NV, ..>, f::<2, NV, ..>, ...]`: index = pixels − 1.
macro_rules! table {
    ($f:ident, $nv:literal, [$($rw:literal),*]) => { &[$($f::<$rw, $nv> as TileFn),*] };
    ($f:ident, $nv:literal, $px:literal, [$($rw:literal),*]) => { &[$($f::<$rw, $nv, $px> as TileFn),*] };
}

/// AVX-512 tables per (NB, pixel stride 16 / 32 / runtime). Register budget: RW·NB
/// accumulators + NB weights + 1 broadcast ≤ 32 (7×4 would need 33 and spills; 6×4 is
/// for 1×1 layers with short reductions).
#[cfg(target_arch = "x86_64")]
macro_rules! avx512_tables {
    ($name:ident, $nv:literal, [$($rw:literal),*]) => {
        static $name: [&[TileFn]; 3] = [
            table!(avx512, $nv, 16, [$($rw),*]),
            table!(avx512, $nv, 32, [$($rw),*]),
            table!(avx512, $nv, 0, [$($rw),*]),
        ];
    };
}
#[cfg(target_arch = "x86_64")]
avx512_tables!(AVX512_NB1, 1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]);
#[cfg(target_arch = "x86_64")]
avx512_tables!(AVX512_NB2, 2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
#[cfg(target_arch = "x86_64")]
avx512_tables!(AVX512_NB3, 3, [1, 2, 3, 4, 5, 6, 7, 8]);
#[cfg(target_arch = "x86_64")]
static AVX512_NB4: [&[TileFn]; 4] = [
    table!(avx512, 4, 16, [1, 2, 3, 4, 5, 6]),
    table!(avx512, 4, 32, [1, 2, 3, 4, 5, 6]),
    table!(avx512, 4, 0, [1, 2, 3, 4, 5, 6]),
    table!(avx512, 4, 2, [1, 2, 3, 4, 5, 6]),
];
#[cfg(target_arch = "x86_64")]
static AVX512_NB2_ROWS2: [&[TileFn]; 3] = [
    table!(avx512_rows2, 2, 16, [1, 2, 3, 4, 5, 6, 7]),
    table!(avx512_rows2, 2, 32, [1, 2, 3, 4, 5, 6, 7]),
    table!(avx512_rows2, 2, 0, [1, 2, 3, 4, 5, 6, 7]),
];
// AVX2: a 16-channel block is 2 ymm; 6 pixels × 2 + 2 weights + 1 broadcast = 15 of 16.
// Per pixel stride, as AVX-512's (16, 32, runtime, the stem's).
#[cfg(target_arch = "x86_64")]
static AVX2_NB1: [&[TileFn]; 4] = [
    &[avx2::<1, 2, 16>, avx2::<2, 2, 16>, avx2::<3, 2, 16>, avx2_asm4::<16>, avx2_asm5::<16>, avx2_asm6::<16>],
    &[avx2::<1, 2, 32>, avx2::<2, 2, 32>, avx2::<3, 2, 32>, avx2_asm4::<32>, avx2_asm5::<32>, avx2_asm6::<32>],
    table!(avx2, 2, 0, [1, 2, 3, 4, 5, 6]),
    &[avx2::<1, 2, 2>, avx2::<2, 2, 2>, avx2::<3, 2, 2>, avx2_stem4, avx2_stem5, avx2_stem6],
];
static SCALAR_NB1: &[TileFn] = table!(scalar, 16, [1, 2, 3, 4]);

/// Output-block counts per tile (NB) the ISA has kernels for, widest first.
pub(super) fn block_counts(level: SimdLevel) -> &'static [usize] {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => &[4, 3, 2, 1],
        _ => &[1],
    }
}

/// Two-row kernels of `level` (2 output blocks, ≤ 7 pixels per row), if it has them;
/// indexed as [`kernels`].
pub(super) fn kernels_rows2(level: SimdLevel, px: usize, cpb: usize) -> Option<&'static [TileFn]> {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => Some(AVX512_NB2_ROWS2[px_index(px, cpb).min(2)]),
        _ => None,
    }
}

/// Index into a kernel table: 0 (pixel stride 16), 1 (32), 2 (runtime stride and
/// channel count), 3 (the stem's, [`STEM_PX`] with [`STEM_CPB`] channels: only the NB = 4
/// table, the stem's tile width, has it; the others take 2 instead).
fn px_index(px: usize, cpb: usize) -> usize {
    match (px, cpb) {
        (16, 16) => 0,
        (32, 16) => 1,
        (STEM_PX, STEM_CPB) => 3,
        _ => 2,
    }
}

/// The kernels of `level` for tiles of `nb` output blocks, input pixel stride `px`
/// floats and `cpb` channels per input block, indexed by pixels − 1 (so the slice
/// length is the widest tile). `nb` must be one of [`block_counts`].
pub(super) fn kernels(level: SimdLevel, nb: usize, px: usize, cpb: usize) -> &'static [TileFn] {
    let pi = px_index(px, cpb);
    match (level, nb) {
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, 4) => AVX512_NB4[pi],
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, 3) => AVX512_NB3[pi.min(2)],
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, 2) => AVX512_NB2[pi.min(2)],
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, 1) => AVX512_NB1[pi.min(2)],
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, 1) => AVX2_NB1[pi],
        (_, 1) => SCALAR_NB1,
        _ => panic!("no blocked-conv kernel for {level:?} with {nb} output blocks"),
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) * 1e-3).collect()
    }

    /// The assembly tiles compute bitwise what the generic `tile_k` does (same FMAs in
    /// the same order, same epilogue), for every pixel count and stride they exist for,
    /// with and without prefetch, residual, ReLU and SE gate; and a call for a run of tiles
    /// (`ntiles` > 1) computes what one call per tile does.
    #[test]
    fn avx2_assembly_tiles_match_the_generic_kernel_bitwise() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("skipped: no AVX2/FMA on this CPU");
            return;
        }
        // A k×k geometry (the loop nest) and a 1×1 one (the flat block loop; with pf 2,
        // three of its five blocks prefetch).
        for (ncb, nky, kw) in [(3, 2, 3), (5, 1, 1)] {
            let (x_col, x_row, x_cb) = (16, 1024, 3072);
            let (w_ky, w_cb) = (kw * 256, nky * kw * 256);
            let x = data(ncb * x_cb + 1024, 1);
            let w = data(ncb * w_cb, 2);
            let bias = data(16, 3);
            let gate: Vec<f32> = data(16, 5).iter().map(|g| 0.5 + g).collect();
            const RUN: usize = 3;
            let res = data(RUN * 6 * 16, 4);
            type Pair = (usize, usize, TileFn, TileFn);
            let pairs: [Pair; 6] = [
                (16, 4, avx2::<4, 2, 16>, avx2_asm4::<16>),
                (16, 5, avx2::<5, 2, 16>, avx2_asm5::<16>),
                (16, 6, avx2::<6, 2, 16>, avx2_asm6::<16>),
                (32, 4, avx2::<4, 2, 32>, avx2_asm4::<32>),
                (32, 5, avx2::<5, 2, 32>, avx2_asm5::<32>),
                (32, 6, avx2::<6, 2, 32>, avx2_asm6::<32>),
            ];
            for (px, n, generic, asm) in pairs {
                for (pf, with_res, relu, with_gate) in [(0, false, false, false), (1, true, true, true), (2, false, true, false), (0, true, false, true)] {
                    let tile = |y: &mut [f32], first: usize, ntiles: usize| Tile {
                        x: x[first * n * px..].as_ptr(),
                        w: w.as_ptr(),
                        bias: bias.as_ptr(),
                        res: if with_res { res[first * n * 16..].as_ptr() } else { std::ptr::null() },
                        gate: if with_gate { gate.as_ptr() } else { std::ptr::null() },
                        y: y[first * n * 16..].as_mut_ptr(),
                        ncb,
                        cpb: 16,
                        nky,
                        kw,
                        x_cb,
                        x_row,
                        x_col,
                        x_ci: 1,
                        x_px: px,
                        w_cb,
                        w_ky,
                        y_ob: 0,
                        x_orow: 0,
                        y_orow: 0,
                        relu,
                        pf,
                        ntiles,
                        x_tile: n * px,
                        y_tile: n * 16,
                    };
                    // Generic and assembly, each one call for the run; generic, a call per tile.
                    let mut out = [vec![0.0f32; RUN * n * 16], vec![0.0f32; RUN * n * 16], vec![0.0f32; RUN * n * 16]];
                    // SAFETY (all calls): every read is inside x (≤ 2·3072 + 1024 + 2·16 +
                    // (3·6 − 1)·32 + 16 floats), w, bias and res; y holds the run's outputs.
                    unsafe {
                        generic(&tile(&mut out[0], 0, RUN));
                        asm(&tile(&mut out[1], 0, RUN));
                        for i in 0..RUN {
                            generic(&tile(&mut out[2], i, 1));
                        }
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    let what = format!("{ncb} blocks × {nky}×{kw}, stride {px}, {n} pixels, pf {pf}, res {with_res}, relu {relu}, gate {with_gate}");
                    assert_eq!(bits(&out[0]), bits(&out[1]), "{what}: assembly vs generic");
                    assert_eq!(bits(&out[0]), bits(&out[2]), "{what}: one call per run vs per tile");
                    assert!(out[0][(RUN - 1) * n * 16..].iter().any(|&v| v != 0.0));
                }
            }
        }
    }

    /// The assembly stem tiles compute bitwise what the generic kernel of the stem's
    /// table does: 3 channel planes, input pixels 2 floats apart, 0–7 kernel rows of a
    /// 7-wide kernel, runs of tiles, with and without residual, ReLU and SE gate.
    #[test]
    fn avx2_stem_tiles_match_the_generic_kernel_bitwise() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("skipped: no AVX2/FMA on this CPU");
            return;
        }
        let kw = 7;
        let (x_row, plane) = (64, 64 * 9 + 5);
        let x = data(STEM_CPB * plane, 7);
        let w = data(7 * kw * STEM_CPB * 16, 8);
        let bias = data(16, 9);
        let gate: Vec<f32> = data(16, 10).iter().map(|g| 0.5 + g).collect();
        const RUN: usize = 2;
        let res = data(RUN * 6 * 16, 11);
        type Pair = (usize, TileFn, TileFn);
        let pairs: [Pair; 3] = [(4, avx2::<4, 2, STEM_PX>, avx2_stem4), (5, avx2::<5, 2, STEM_PX>, avx2_stem5), (6, avx2::<6, 2, STEM_PX>, avx2_stem6)];
        for (n, generic, asm) in pairs {
            for (nky, with_res, relu, with_gate) in [(7, false, false, false), (3, true, true, true), (1, false, true, false), (0, true, false, true)] {
                let tile = |y: &mut [f32], first: usize, ntiles: usize| Tile {
                    x: x[first * n * STEM_PX..].as_ptr(),
                    w: w[(7 - nky) * kw * STEM_CPB * 16..].as_ptr(),
                    bias: bias.as_ptr(),
                    res: if with_res { res[first * n * 16..].as_ptr() } else { std::ptr::null() },
                    gate: if with_gate { gate.as_ptr() } else { std::ptr::null() },
                    y: y[first * n * 16..].as_mut_ptr(),
                    ncb: 1,
                    cpb: STEM_CPB,
                    nky,
                    kw,
                    x_cb: 0,
                    x_row,
                    x_col: 1,
                    x_ci: plane,
                    x_px: STEM_PX,
                    w_cb: 7 * kw * STEM_CPB * 16,
                    w_ky: kw * STEM_CPB * 16,
                    y_ob: 0,
                    x_orow: 0,
                    y_orow: 0,
                    relu,
                    pf: 0,
                    ntiles,
                    x_tile: n * STEM_PX,
                    y_tile: n * 16,
                };
                let mut out = [vec![0.0f32; RUN * n * 16], vec![0.0f32; RUN * n * 16], vec![0.0f32; RUN * n * 16]];
                // SAFETY (all calls): reads up to plane 2, row 6, column
                // (2·6 − 1)·2 + 6 < 64 of x, the last kernel rows of w, bias, res; y
                // holds the run's outputs.
                unsafe {
                    generic(&tile(&mut out[0], 0, RUN));
                    asm(&tile(&mut out[1], 0, RUN));
                    for i in 0..RUN {
                        generic(&tile(&mut out[2], i, 1));
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                let what = format!("{n} pixels, {nky} kernel rows, res {with_res}, relu {relu}, gate {with_gate}");
                assert_eq!(bits(&out[0]), bits(&out[1]), "{what}: assembly vs generic");
                assert_eq!(bits(&out[0]), bits(&out[2]), "{what}: one call per run vs per tile");
                assert!(out[0][(RUN - 1) * n * 16..].iter().any(|&v| v != 0.0));
            }
        }
    }
}
