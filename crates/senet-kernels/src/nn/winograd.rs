//! Winograd convolution for 3×3, stride 1, pad 1, dense layers on Blk16 activations:
//! [`ConvWino`], a drop-in for [`super::blocked::ConvBlk`] on those layers (same `run`
//! contract), with F(2×2,3×3) (2.25× fewer multiplies, float32 error ~ direct) or
//! F(4×4,3×3) (4× fewer; ~20× the rounding error of F(2,3): measured max 2.8e-6 vs
//! 1.3e-7 of Σ|terms| per layer, see tests/winograd.rs).
//!
//! **Algorithm** (Lavin & Gray 2015). With tiles of A×A inputs (A = m + 2, m = 2 or 4)
//! overlapping by 2 and producing m×m outputs:
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`, summed over input channels inside the ⊙. Per
//! transform position ξ (P = A² of them) that sum is a GEMM
//! `M_ξ[tile][co] = Σ_ci V_ξ[tile][ci] · U_ξ[ci][co]`.
//! 1. Weights: `U = G g Gᵀ` once at construction (in float64, rounded once), packed per
//!    group of ≤ 2 output blocks (AVX-512; 1 on the other levels, see `group_blocks`)
//!    as `[ξ][ci (padded to 16·⌈cin/16⌉)][nb·16 co]`, 64-byte aligned.
//! 2. Per task (a block of T consecutive tiles of the whole batch × a range of output
//!    block groups): the input transform `V = Bᵀ d B` of the T tiles, all input blocks,
//!    vectorized over the 16 channel lanes, into per-thread scratch `[ξ][cb][T][16]`.
//!    Borders (padding 1, partial tiles at the right/bottom) read zeros.
//! 3. For each output group and ξ: a register-blocked GEMM (AVX-512: 14 tiles × 2
//!    output blocks of zmm accumulators; per input channel 2 weight loads and one
//!    broadcast per tile, as in `blocked_kernel.rs`) into scratch `M[ξ][nb][T][16]`.
//! 4. The output transform `Aᵀ M A` per tile and block, then bias + residual + ReLU, and
//!    the one store of each in-bounds output.
//!
//! Two GEMM loop orders: group-outer (per output group all ξ, then its output
//! transform; T chosen so that V, P·K·T floats, stays in L2) for transformed weights
//! ≤ 3 MiB, and ξ-outer for larger ones (256 and 512 channels): per ξ all groups, so
//! each V_ξ slice (K·T ≤ 64 Ki floats) is reused from L1/L2 by every group and the
//! weights are streamed once per tile block of up to 128–256 tiles; M then holds all
//! the task's groups. When there are too few tile blocks for the threads, tasks also
//! split the output groups (each then transforms its input tiles itself, so this is
//! done only when the transformed weights outweigh the input 8× or there are fewer
//! tiles than threads; see `plan`); with a single tile block its transform is done once,
//! by all threads, into a V the splits share (`Phase`). Per-thread
//! scratch (thread-local, reused): P·T·16·(⌈cin/16⌉ + blocks of M) floats, e.g.
//! ~0.8 MB for 64 channels, ~4.5 MB for F(4,3) 512→512 at batch 8.
//!
//! **When it wins** (measured against `ConvBlk`, 1 thread, residual + ReLU, AVX-512;
//! `examples/winograd_speed.rs`): F(4,3) 1.75–2.3× on 64@56 and 128@28 (batch 1 and
//! 8); at 256@14 F(2,3) ~1.4× (F(4,3) pads 14 to 16: better only at batch 8); at 512@7
//! batch 8 F(4,3) ~1.5× and F(2,3) ~1.27× (2 threads), batch 1 F(2,3) about even and
//! F(4,3) 1.6× slower (the transformed weights, 16/9 or 4× the direct ones, stream from
//! memory for only 4–16 tiles): `Conv::new` takes F(2,3) there.
//!
//! **Determinism:** each output is computed by one task in an order fixed by the shape
//! (input transform, GEMM over ci = 0..K in order, output transform); the blocking only
//! changes which task does it, so results are bitwise identical for any
//! thread count, tiling and loop order.

use crate::aligned::{with_scratch, Aligned};
use super::blocked::{blk16_len, blocks, BLK};
use super::for_each_task;
use crate::simd::{self, SimdLevel};
use crate::vec::Vf32;
use crate::Shape4;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Winograd tile: outputs per tile side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WinoTile {
    /// F(2×2, 3×3): 4×4 input tiles, 16 GEMMs, 2.25× fewer multiplies than direct.
    F2,
    /// F(4×4, 3×3): 6×6 input tiles, 36 GEMMs, 4× fewer multiplies; larger transform
    /// coefficients (up to 8), so ~20× the float32 rounding error of F2.
    F4,
}

impl WinoTile {
    /// Outputs per tile side (m).
    pub fn m(self) -> usize {
        match self {
            WinoTile::F2 => 2,
            WinoTile::F4 => 4,
        }
    }
    /// Inputs per tile side (A = m + 2).
    fn a(self) -> usize {
        self.m() + 2
    }
    /// The 3 → A weight transform G (rows).
    fn g(self) -> &'static [[f64; 3]] {
        match self {
            WinoTile::F2 => &[[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
            WinoTile::F4 => &[
                [0.25, 0.0, 0.0],
                [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
                [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
                [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
                [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
                [0.0, 0.0, 1.0],
            ],
        }
    }
}

thread_local! {
    /// The calling thread's transform scratch (V and M), reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// V shared by the tasks of one call that split only the output groups (see
    /// [`Phase`]), owned by the calling thread.
    static SHARED_V: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The squeeze's per-tile sums of one `run_squeeze` call, owned by the calling thread.
    static SQ_PART: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// What a task does. `Whole`: the input transform of its tile block into its own V,
/// then the GEMMs and output transform of its split. When a call has one tile block and
/// several splits (ξ-outer at batch 1 on several threads), every split would transform
/// the same tiles: then `Transform` tasks fill one shared V (input blocks cb0..cb1 each)
/// and `Compute` tasks run the splits on it (scratch only for M).
#[derive(Clone, Copy)]
enum Phase {
    Whole,
    Transform { cb0: usize, cb1: usize, v: *mut f32 },
    Compute { v: *mut f32 },
}

/// Measurement overrides (speed only, never results): `SENET_WINO_XI=0|1` GEMM loop
/// order, `SENET_WINO_T` tiles per block,
/// `SENET_WINO_SPLIT` output-group splits per tile block.
struct Tunables {
    xi: Option<bool>,
    t: Option<usize>,
    split: Option<usize>,
}

fn tunables() -> &'static Tunables {
    static T: OnceLock<Tunables> = OnceLock::new();
    T.get_or_init(|| Tunables {
        xi: std::env::var("SENET_WINO_XI").ok().map(|v| v != "0"),
        t: std::env::var("SENET_WINO_T").ok().and_then(|v| v.parse().ok()).filter(|&v| v > 0),
        split: std::env::var("SENET_WINO_SPLIT").ok().and_then(|v| v.parse().ok()).filter(|&v| v > 0),
    })
}

/// A 3×3 / stride 1 / pad 1 dense convolution by Winograd on Blk16 activations, with
/// bias + residual + ReLU fused: `y = act(conv(x, weight) + bias [+ residual])`.
pub struct ConvWino {
    cin: usize,
    cout: usize,
    tile: WinoTile,
    /// Output block groups (first block, count ≤ 2) and the offset of each one's
    /// transformed weights `[ξ][K][nb·16]` in `u`.
    groups: Vec<(usize, usize)>,
    uoff: Vec<usize>,
    u: Aligned,
    /// `16·⌈cout/16⌉` values, zero padded.
    bias: Aligned,
}

/// Operands of one GEMM microkernel call: RW tiles × NV output vectors, reduced over
/// `ncb` input blocks of 16 channels.
struct Gemm {
    /// V at (ξ, block 0, first tile): tile stride 16, channel stride 1, block `v_cb`.
    v: *const f32,
    /// U at (ξ, ci 0, first output lane): `u_ci` floats per input channel.
    u: *const f32,
    /// M at (ξ, first block, first tile): tile stride 16, block stride `m_ob`.
    m: *mut f32,
    ncb: usize,
    v_cb: usize,
    u_ci: usize,
    m_ob: usize,
    /// Prefetch the next input block's weights while reducing over this one.
    pf: bool,
}

type GemmFn = unsafe fn(&Gemm);

/// Reductions of at least this many channels prefetch their weights one input block (16
/// steps) ahead: measured +4–6% on F(2,3) 256→256 at 14×14 (batch 1 and 8, 1 and 2
/// threads), no gain at 64–128 channels. Only the first chunk of tiles of a (group,
/// position) does: the later chunks read the same weights from cache (A/B seresnet50
/// 0.96–1.01×, median 0.974, against prefetching in every chunk).
const WPF_MIN_K: usize = 256;

/// `M[p][j] = Σ_{ci} V[p][ci] · U[ci][j]` with ci in order 0..16·ncb, from zero.
#[inline(always)]
unsafe fn gemm_k<V: Vf32, const RW: usize, const NV: usize>(g: &Gemm) {
    let vpb = 16 / V::LANES;
    let mut acc = [[V::zero(); NV]; RW];
    for cb in 0..g.ncb {
        let vb = g.v.add(cb * g.v_cb);
        let ub = g.u.add(cb * 16 * g.u_ci);
        // Only inside this call's weights (see the direct kernel's prefetch).
        #[cfg(target_arch = "x86_64")]
        let pf = g.pf && cb + 1 < g.ncb;
        for ci in 0..16 {
            let uc = ub.add(ci * g.u_ci);
            #[cfg(target_arch = "x86_64")]
            if pf {
                for j in 0..NV * V::LANES / 16 {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(uc.add(16 * g.u_ci + j * 16) as *const i8);
                }
            }
            let mut wv = [V::zero(); NV];
            for (j, w) in wv.iter_mut().enumerate() {
                *w = V::load(uc.add(j * V::LANES));
            }
            for (p, a) in acc.iter_mut().enumerate() {
                let xv = V::splat(*vb.add(p * 16 + ci));
                for j in 0..NV {
                    a[j] = xv.mul_add(wv[j], a[j]);
                }
            }
        }
    }
    for (p, a) in acc.iter().enumerate() {
        for (j, &s) in a.iter().enumerate() {
            s.store(g.m.add((j / vpb) * g.m_ob + p * 16 + (j % vpb) * V::LANES));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(feature = "emulate-avx512"), target_feature(enable = "avx512f"))]
unsafe fn gemm_avx512<const RW: usize, const NV: usize>(g: &Gemm) {
    gemm_k::<crate::vec::Avx512, RW, NV>(g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_avx2<const RW: usize, const NV: usize>(g: &Gemm) {
    gemm_k::<crate::vec::Avx2, RW, NV>(g)
}

/// Defines `$name<WS>`: [`gemm_k`]`::<Avx2, $n, 2>` with each input block's 16 steps
/// in inline assembly (`$step`, from `blocked_kernel.rs`: the same FMAs in the same
/// order, so bitwise the same M) for a weight row of `WS` floats (`u_ci`: 16, or 32 for
/// one block of a two-block group).
///
/// Safety of the generated function: as [`GemmFn`], with `g.u_ci == WS`.
#[cfg(target_arch = "x86_64")]
macro_rules! gemm_avx2_asm {
    ($name:ident, $n:literal, $step:ident) => {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name<const WS: usize>(g: &Gemm) {
            use core::arch::x86_64::{__m256, _mm256_setzero_ps, _mm256_storeu_ps, _mm_prefetch, _MM_HINT_T0};
            debug_assert_eq!(g.u_ci, WS);
            let mut a: [__m256; 2 * $n] = [_mm256_setzero_ps(); 2 * $n];
            for cb in 0..g.ncb {
                let vb = g.v.add(cb * g.v_cb);
                let ub = g.u.add(cb * 16 * WS);
                // The next block's weights, only inside this call's (as `gemm_k`).
                if g.pf && cb + 1 < g.ncb {
                    for ci in 0..16 {
                        _mm_prefetch::<_MM_HINT_T0>(ub.add(16 * WS + ci * WS) as *const i8);
                    }
                }
                // SAFETY: V holds ≥ $n tiles × 16 channels at vb (tile stride 16) and U 16
                // rows of WS ≥ 16 weights at ub (see `Gemm`).
                super::blocked::kernel::$step::<16, WS>(vb, ub, &mut a);
            }
            for p in 0..$n {
                for j in 0..2 {
                    _mm256_storeu_ps(g.m.add(p * 16 + j * 8), a[2 * p + j]);
                }
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
gemm_avx2_asm!(gemm_avx2_asm6, 6, avx2_step16_6);
#[cfg(target_arch = "x86_64")]
gemm_avx2_asm!(gemm_avx2_asm5, 5, avx2_step16_5);
#[cfg(target_arch = "x86_64")]
gemm_avx2_asm!(gemm_avx2_asm4, 4, avx2_step16_4);

unsafe fn gemm_scalar<const RW: usize, const NV: usize>(g: &Gemm) {
    gemm_k::<f32, RW, NV>(g)
}

macro_rules! gtable {
    ($f:ident, $nv:literal, [$($rw:literal),*]) => { &[$($f::<$rw, $nv> as GemmFn),*] };
}

/// AVX-512: 2 output blocks × ≤ 14 tiles (28 accumulators + 2 weights + 1 broadcast),
/// 1 block × ≤ 24 tiles.
#[cfg(target_arch = "x86_64")]
static AVX512_K2: &[GemmFn] = gtable!(gemm_avx512, 2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
#[cfg(target_arch = "x86_64")]
static AVX512_K1: &[GemmFn] = gtable!(
    gemm_avx512,
    1,
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]
);
/// AVX2: 1 block = 2 ymm × ≤ 6 tiles, the 4–6-tile kernels in assembly, per weight row.
#[cfg(target_arch = "x86_64")]
static AVX2_K1_16: &[GemmFn] =
    &[gemm_avx2::<1, 2>, gemm_avx2::<2, 2>, gemm_avx2::<3, 2>, gemm_avx2_asm4::<16>, gemm_avx2_asm5::<16>, gemm_avx2_asm6::<16>];
#[cfg(target_arch = "x86_64")]
static AVX2_K1_32: &[GemmFn] =
    &[gemm_avx2::<1, 2>, gemm_avx2::<2, 2>, gemm_avx2::<3, 2>, gemm_avx2_asm4::<32>, gemm_avx2_asm5::<32>, gemm_avx2_asm6::<32>];
static SCALAR_K1: &[GemmFn] = gtable!(gemm_scalar, 16, [1, 2, 3, 4]);

/// Output blocks per weight group for a layer built at `level`: 2 where the level has
/// 2-block GEMM kernels (AVX-512), else 1. A 1-block GEMM call on a 2-block group reads
/// half of every 128-byte weight row (every other cache line); with its own group it
/// reads whole lines in order. Measured on AVX2 (Zen 3, cold caches, `winograd_speed`,
/// alternated): 0.86–0.98× the time at 64@56 … 512@7, batch 1 and 8, F(2,3) and F(4,3).
/// A layer keeps its packing if the level changes later (the other level's kernels
/// run on it too).
fn group_blocks(level: SimdLevel) -> usize {
    if gemm_tables(level).0.is_empty() {
        1
    } else {
        2
    }
}

/// (kernels for 2-block groups (empty: none), kernels for 1 block with a weight row of
/// 16 floats, the same with a row of 32 (a 2-block group's blocks run one by one)),
/// indexed by tiles − 1.
fn gemm_tables(level: SimdLevel) -> (&'static [GemmFn], &'static [GemmFn], &'static [GemmFn]) {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => (AVX512_K2, AVX512_K1, AVX512_K1),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => (&[], AVX2_K1_16, AVX2_K1_32),
        _ => (&[], SCALAR_K1, SCALAR_K1),
    }
}

/// 1-D input transform `Bᵀ d` of A = 4 or 6 points (the first A of `d`).
#[inline(always)]
unsafe fn bt<V: Vf32, const A: usize>(d: &[V; 6]) -> [V; 6] {
    let mut r = [V::zero(); 6];
    if A == 4 {
        r[0] = d[0].sub(d[2]);
        r[1] = d[1].add(d[2]);
        r[2] = d[2].sub(d[1]);
        r[3] = d[1].sub(d[3]);
    } else {
        let (four, m4, m5, two, m2) = (V::splat(4.0), V::splat(-4.0), V::splat(-5.0), V::splat(2.0), V::splat(-2.0));
        // r0 = 4d0 − 5d2 + d4; r5 = 4d1 − 5d3 + d5
        r[0] = m5.mul_add(d[2], four.mul_add(d[0], d[4]));
        r[5] = m5.mul_add(d[3], four.mul_add(d[1], d[5]));
        // r1 = −4(d1 + d2) + (d3 + d4); r2 = 4(d1 − d2) + (d4 − d3)
        r[1] = m4.mul_add(d[1].add(d[2]), d[3].add(d[4]));
        r[2] = four.mul_add(d[1].sub(d[2]), d[4].sub(d[3]));
        // r3 = 2(d3 − d1) + (d4 − d2); r4 = −2(d3 − d1) + (d4 − d2)
        let (e, c) = (d[3].sub(d[1]), d[4].sub(d[2]));
        r[3] = two.mul_add(e, c);
        r[4] = m2.mul_add(e, c);
    }
    r
}

/// 1-D output transform `Aᵀ m`: A points in, A − 2 out.
#[inline(always)]
unsafe fn at<V: Vf32, const A: usize>(m: &[V; 6]) -> [V; 4] {
    let mut o = [V::zero(); 4];
    if A == 4 {
        o[0] = m[0].add(m[1]).add(m[2]);
        o[1] = m[1].sub(m[2]).sub(m[3]);
    } else {
        let (s12, d12, s34, d34) = (m[1].add(m[2]), m[1].sub(m[2]), m[3].add(m[4]), m[3].sub(m[4]));
        o[0] = m[0].add(s12).add(s34);
        o[1] = V::splat(2.0).mul_add(d34, d12);
        o[2] = V::splat(4.0).mul_add(s34, s12);
        o[3] = V::splat(8.0).mul_add(d34, d12).add(m[5]);
    }
    o
}

/// Everything a task needs; shared read-only by all tasks of one call.
struct Ctx<'a> {
    x: *const f32,
    y: *mut f32,
    res: *const f32,
    h: usize,
    w: usize,
    /// Tiles per image row / column.
    th: usize,
    tw: usize,
    /// Input blocks, output blocks.
    cb: usize,
    cob: usize,
    /// Tiles per block at most (the scratch stride), tiles in the batch, tile blocks:
    /// block b holds tiles b·g/nblk .. (b+1)·g/nblk (sizes differ by at most one).
    t: usize,
    g_total: usize,
    nblk: usize,
    groups: &'a [(usize, usize)],
    uoff: &'a [usize],
    /// Per split: range of groups.
    splits: &'a [(usize, usize)],
    u: *const f32,
    bias: *const f32,
    relu: bool,
    /// Squeeze partial sums (`run_squeeze`), or null: per tile of the batch and output
    /// channel (`[g_total][cob·16]`), the sum of the tile's stored outputs, written by
    /// the task that stores them.
    sq: *mut f32,
    /// Loop order of the GEMMs: ξ outer (M of all the task's groups in scratch).
    xi_outer: bool,
    k2: &'static [GemmFn],
    k1: &'static [GemmFn],
    /// The one-block kernels for a weight row of 32 floats (two-block groups split into
    /// one-block calls), where the level has its own for that row (else `k1`).
    k1_32: &'static [GemmFn],
}

// SAFETY: the pointers are only read (x, res, u, bias) or written at outputs owned by
// one task (y); see `task_k`.
unsafe impl Sync for Ctx<'_> {}
unsafe impl Send for Ctx<'_> {}

/// One task: tiles `blk·T ..` of the batch, output groups of split `s`. `scr` holds
/// `P·cb·T·16` floats of V then `P·2·T·16` of M.
///
/// # Safety
/// The ISA of `V` must be available; pointers as described in [`Ctx`]; no other task
/// writes the same (tile block, split).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // columns of a row-major array of vectors
unsafe fn task_k<V: Vf32, const A: usize>(c: &Ctx, blk: usize, s: usize, scr: &mut [f32], phase: Phase) {
    let m = A - 2;
    let p = A * A;
    let g0 = blk * c.g_total / c.nblk;
    let nt = (blk + 1) * c.g_total / c.nblk - g0;
    debug_assert!(nt <= c.t);
    let tpi = c.th * c.tw;
    let (h, w) = (c.h, c.w);
    let v_xi = c.cb * c.t * 16; // floats per ξ in V
    let (vp, mp, cb0, cb1) = match phase {
        Phase::Whole => {
            let (vbuf, mbuf) = scr.split_at_mut(p * v_xi);
            (vbuf.as_mut_ptr(), mbuf.as_mut_ptr(), 0, c.cb)
        }
        Phase::Transform { cb0, cb1, v } => (v, std::ptr::null_mut(), cb0, cb1),
        Phase::Compute { v } => (v, scr.as_mut_ptr(), 0, 0),
    };
    let decode = |g: usize| {
        let (n, r) = (g / tpi, g % tpi);
        (n, r / c.tw, r % c.tw)
    };
    // 1. Input transform of the block's tiles: V = Bᵀ d B, row transforms first (d B),
    //    then columns, on A×A vectors of 16 / LANES lanes at a time.
    //    Block-outer: the tiles of one input block walk A rows of one plane (few
    //    prefetch streams).
    for cb in cb0..cb1 {
        for t in 0..nt {
            let (n, ty, tx) = decode(g0 + t);
            let iy0 = (ty * m) as isize - 1;
            let ix0 = (tx * m) as isize - 1;
            let interior = iy0 >= 0 && iy0 as usize + A <= h && ix0 >= 0 && ix0 as usize + A <= w;
            let plane = c.x.add((n * c.cb + cb) * h * w * 16);
            for l in (0..16).step_by(V::LANES) {
                let mut tmp = [[V::zero(); 6]; 6];
                for (r, tr) in tmp.iter_mut().enumerate().take(A) {
                    let iy = iy0 + r as isize;
                    let mut d = [V::zero(); 6];
                    if interior {
                        let row = plane.add((iy as usize * w + ix0 as usize) * 16 + l);
                        for (cc, dv) in d.iter_mut().enumerate().take(A) {
                            *dv = V::load(row.add(cc * 16));
                        }
                    } else if iy >= 0 && iy < h as isize {
                        let row = plane.add(iy as usize * w * 16 + l);
                        for (cc, dv) in d.iter_mut().enumerate().take(A) {
                            let ix = ix0 + cc as isize;
                            if ix >= 0 && ix < w as isize {
                                *dv = V::load(row.add(ix as usize * 16));
                            }
                        }
                    }
                    *tr = bt::<V, A>(&d);
                }
                let dst = vp.add((cb * c.t + t) * 16 + l);
                for cc in 0..A {
                    let col = [tmp[0][cc], tmp[1][cc], tmp[2][cc], tmp[3][cc], tmp[4][cc], tmp[5][cc]];
                    let r = bt::<V, A>(&col);
                    for (rr, v) in r.iter().enumerate().take(A) {
                        v.store(dst.add((rr * A + cc) * v_xi));
                    }
                }
            }
        }
    }
    if let Phase::Transform { .. } = phase {
        return;
    }
    // 2.–4. Per output group: GEMMs then output transform. Group-outer (M of one group
    // at a time, V reread per group from L2), or ξ-outer for large weights (each V_ξ
    // slice reused by all groups while in L1/L2, M of all the split's groups kept).
    let (ga, gb) = c.splits[s];
    let st = Step { c, nt, g0, v_xi, vp };
    let ob_first = c.groups[ga].0;
    if c.xi_outer {
        for xi in 0..p {
            for gi in ga..gb {
                gemm_group::<V, A>(&st, gi, xi, mp.add(p * (c.groups[gi].0 - ob_first) * c.t * 16));
            }
        }
        for gi in ga..gb {
            out_group::<V, A>(&st, gi, mp.add(p * (c.groups[gi].0 - ob_first) * c.t * 16));
        }
    } else {
        for gi in ga..gb {
            for xi in 0..p {
                gemm_group::<V, A>(&st, gi, xi, mp);
            }
            out_group::<V, A>(&st, gi, mp);
        }
    }
}

/// The per-task values the GEMM and output-transform steps share.
struct Step<'a, 'b> {
    c: &'a Ctx<'b>,
    nt: usize,
    g0: usize,
    v_xi: usize,
    vp: *mut f32,
}

/// The GEMMs of group `gi` at position `xi` into M at `mp` (`[ξ][nb][T][16]`).
#[inline(always)]
unsafe fn gemm_group<V: Vf32, const A: usize>(st: &Step, gi: usize, xi: usize, mp: *mut f32) {
    let (c, nt, v_xi, vp) = (st.c, st.nt, st.v_xi, st.vp);
    let k = c.cb * 16;
    let nb = c.groups[gi].1;
    let ub = c.u.add(c.uoff[gi]);
    let two = nb == 2 && !c.k2.is_empty();
    let table = if two {
        c.k2
    } else if nb == 2 {
        c.k1_32
    } else {
        c.k1
    };
    let chunks = nt.div_ceil(table.len());
    let (base, extra) = (nt / chunks, nt % chunks);
    let vx = vp.add(xi * v_xi) as *const f32;
    let ux = ub.add(xi * k * nb * 16);
    let mx = mp.add(xi * nb * c.t * 16);
    let mut t0 = 0;
    for ch in 0..chunks {
        let rw = base + usize::from(ch < extra);
        let f = table[rw - 1];
        if two {
            f(&Gemm {
                v: vx.add(t0 * 16),
                u: ux,
                m: mx.add(t0 * 16),
                ncb: c.cb,
                v_cb: c.t * 16,
                u_ci: 32,
                m_ob: c.t * 16,
                pf: k >= WPF_MIN_K && ch == 0,
            });
        } else {
            for b in 0..nb {
                f(&Gemm {
                    v: vx.add(t0 * 16),
                    u: ux.add(b * 16),
                    m: mx.add((b * c.t + t0) * 16),
                    ncb: c.cb,
                    v_cb: c.t * 16,
                    u_ci: nb * 16,
                    m_ob: c.t * 16,
                    pf: k >= WPF_MIN_K && ch == 0,
                });
            }
        }
        t0 += rw;
    }
}

/// Output transform (M A per row, then Aᵀ per column) + epilogue of group `gi` from M
/// at `mp`.
#[inline(always)]
unsafe fn out_group<V: Vf32, const A: usize>(st: &Step, gi: usize, mp: *mut f32) {
    match (st.c.res.is_null(), st.c.relu) {
        (true, false) => out_group_k::<V, A, false, false>(st, gi, mp),
        (true, true) => out_group_k::<V, A, false, true>(st, gi, mp),
        (false, false) => out_group_k::<V, A, true, false>(st, gi, mp),
        (false, true) => out_group_k::<V, A, true, true>(st, gi, mp),
    }
}

/// The `mh × mw` outputs of a tile (rows `w·16` floats apart from `y + off`): second
/// 1-D output transform, bias, residual, ReLU, store. Returns the sum of the stored
/// values (column by column, each column's rows in order), for the squeeze.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn emit<V: Vf32, const A: usize, const RES: bool, const RELU: bool>(
    tmp: &[[V; 4]; 6],
    bias: V,
    y: *mut f32,
    res: *const f32,
    off: usize,
    w: usize,
    mh: usize,
    mw: usize,
) -> V {
    let mut sum = V::zero();
    for j in 0..mw {
        let col = [tmp[0][j], tmp[1][j], tmp[2][j], tmp[3][j], tmp[4][j], tmp[5][j]];
        let o = at::<V, A>(&col);
        for (i, &ov) in o.iter().enumerate().take(mh) {
            let off = off + (i * w + j) * 16;
            let mut v = ov.add(bias);
            if RES {
                v = v.add(V::load(res.add(off)));
            }
            if RELU {
                v = v.max(V::zero());
            }
            v.store(y.add(off));
            sum = sum.add(v);
        }
    }
    sum
}

#[inline(always)]
unsafe fn out_group_k<V: Vf32, const A: usize, const RES: bool, const RELU: bool>(st: &Step, gi: usize, mp: *mut f32) {
    let (c, nt, g0) = (st.c, st.nt, st.g0);
    let m = A - 2;
    let (h, w) = (c.h, c.w);
    let tpi = c.th * c.tw;
    let decode = |g: usize| {
        let (n, r) = (g / tpi, g % tpi);
        (n, r / c.tw, r % c.tw)
    };
    let (ob0, nb) = c.groups[gi];
    // Output transform (M A per row, then Aᵀ per column) + epilogue.
    let m_xi = nb * c.t * 16;
    for t in 0..nt {
        let (n, ty, tx) = decode(g0 + t);
        let (oy0, ox0) = (ty * m, tx * m);
        let (mh, mw) = (m.min(h - oy0), m.min(w - ox0));
        for b in 0..nb {
            let ob = ob0 + b;
            let yoff = (n * c.cob + ob) * h * w * 16 + (oy0 * w + ox0) * 16;
            for l in (0..16).step_by(V::LANES) {
                let src = mp.add((b * c.t + t) * 16 + l);
                let mut tmp = [[V::zero(); 4]; 6];
                for (r, tr) in tmp.iter_mut().enumerate().take(A) {
                    let mut row = [V::zero(); 6];
                    for (cc, mv) in row.iter_mut().enumerate().take(A) {
                        *mv = V::load(src.add((r * A + cc) * m_xi));
                    }
                    *tr = at::<V, A>(&row);
                }
                let bias = V::load(c.bias.add(ob * 16 + l));
                let sum = if mh == m && mw == m {
                    emit::<V, A, RES, RELU>(&tmp, bias, c.y, c.res, yoff + l, w, A - 2, A - 2)
                } else {
                    emit::<V, A, RES, RELU>(&tmp, bias, c.y, c.res, yoff + l, w, mh, mw)
                };
                if !c.sq.is_null() {
                    // Tile g0 + t, channels ob·16 + l ..: stored by this task only.
                    sum.store(c.sq.add((g0 + t) * c.cob * 16 + ob * 16 + l));
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(feature = "emulate-avx512"), target_feature(enable = "avx512f"))]
unsafe fn task_avx512<const A: usize>(c: &Ctx, blk: usize, s: usize, scr: &mut [f32], phase: Phase) {
    task_k::<crate::vec::Avx512, A>(c, blk, s, scr, phase)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_avx2<const A: usize>(c: &Ctx, blk: usize, s: usize, scr: &mut [f32], phase: Phase) {
    task_k::<crate::vec::Avx2, A>(c, blk, s, scr, phase)
}

unsafe fn task_scalar<const A: usize>(c: &Ctx, blk: usize, s: usize, scr: &mut [f32], phase: Phase) {
    task_k::<f32, A>(c, blk, s, scr, phase)
}

type TaskFn = unsafe fn(&Ctx, usize, usize, &mut [f32], Phase);

fn task_fn(level: SimdLevel, tile: WinoTile) -> TaskFn {
    match (level, tile) {
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, WinoTile::F2) => task_avx512::<4>,
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, WinoTile::F4) => task_avx512::<6>,
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, WinoTile::F2) => task_avx2::<4>,
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, WinoTile::F4) => task_avx2::<6>,
        (_, WinoTile::F2) => task_scalar::<4>,
        (_, WinoTile::F4) => task_scalar::<6>,
    }
}

impl ConvWino {
    /// F(2×2,3×3) from PyTorch weights `[cout, cin, 3, 3]` and `bias [cout]`.
    ///
    /// # Panics
    /// On a zero channel count or a buffer of the wrong length.
    pub fn new(weight: &[f32], bias: &[f32], cin: usize, cout: usize) -> ConvWino {
        ConvWino::with_tile(weight, bias, cin, cout, WinoTile::F2)
    }

    /// As [`ConvWino::new`] with the given tile size.
    pub fn with_tile(weight: &[f32], bias: &[f32], cin: usize, cout: usize, tile: WinoTile) -> ConvWino {
        Self::with_tile_grouped(weight, bias, cin, cout, tile, group_blocks(simd::level()))
    }

    /// [`ConvWino::with_tile`] with the weights packed in groups of `gsz` (1 or 2) output
    /// blocks whatever the SIMD level, for tests (every packing runs on every level and
    /// computes the same bits).
    #[doc(hidden)]
    pub fn with_tile_grouped(weight: &[f32], bias: &[f32], cin: usize, cout: usize, tile: WinoTile, gsz: usize) -> ConvWino {
        assert!(cin > 0 && cout > 0, "conv_wino: zero channels");
        assert_eq!(weight.len(), cout * cin * 9, "conv_wino: weight length");
        assert_eq!(bias.len(), cout, "conv_wino: bias length");
        let (a, gm) = (tile.a(), tile.g());
        let p = a * a;
        let k = blocks(cin) * BLK;
        let cob = blocks(cout);
        let mut groups = Vec::new();
        let mut uoff = Vec::new();
        let mut total = 0;
        assert!(gsz == 1 || gsz == 2, "conv_wino: output blocks per group must be 1 or 2");
        for ob0 in (0..cob).step_by(gsz) {
            let nb = gsz.min(cob - ob0);
            groups.push((ob0, nb));
            uoff.push(total);
            total += p * k * nb * BLK;
        }
        let mut ua = Aligned::zeroed(total);
        let u = ua.as_mut_slice();
        let mut gg = vec![0.0f64; a * 3];
        for co in 0..cout {
            let (ob, lane) = (co / BLK, co % BLK);
            let (gi, b) = (ob / gsz, ob % gsz);
            let nb = groups[gi].1;
            for ci in 0..cin {
                let g = &weight[(co * cin + ci) * 9..][..9];
                // gg = G g (A×3), then U = gg Gᵀ (A×A), in float64.
                for r in 0..a {
                    for kx in 0..3 {
                        gg[r * 3 + kx] = (0..3).map(|ky| gm[r][ky] * g[ky * 3 + kx] as f64).sum();
                    }
                }
                for r in 0..a {
                    for cc in 0..a {
                        let v: f64 = (0..3).map(|kx| gg[r * 3 + kx] * gm[cc][kx]).sum();
                        u[uoff[gi] + ((r * a + cc) * k + ci) * nb * BLK + b * BLK + lane] = v as f32;
                    }
                }
            }
        }
        let mut bb = Aligned::zeroed(cob * BLK);
        bb.as_mut_slice()[..cout].copy_from_slice(bias);
        ConvWino {
            cin,
            cout,
            tile,
            groups,
            uoff,
            u: ua,
            bias: bb,
        }
    }

    /// Input channels.
    pub fn cin(&self) -> usize {
        self.cin
    }

    /// Output channels.
    pub fn cout(&self) -> usize {
        self.cout
    }

    /// The tile size.
    pub fn tile(&self) -> WinoTile {
        self.tile
    }

    /// For profiles and messages.
    pub fn describe(&self) -> String {
        format!("3x3/1 p1 wino-F({},3)", self.tile.m())
    }

    /// Output height and width: the input's (3×3, stride 1, pad 1).
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        Some((h, w))
    }

    /// Whether the GEMMs run ξ-outer: when the transformed weights exceed 3 MiB
    /// (`SENET_WINO_XI=0|1` overrides). Then a tile block is as large as a V_ξ slice
    /// of ≤ 256 KiB allows, so the weights are streamed fewer times per call.
    fn xi_outer(&self) -> bool {
        match tunables().xi {
            Some(v) => v,
            None => self.u.as_slice().len() > 3 << 18,
        }
    }

    /// Tiles per block, number of blocks and output-group splits for `g` tiles.
    fn plan(&self, g: usize, threads: usize, xi_outer: bool) -> (usize, usize, usize) {
        let a = self.tile.a();
        let k = blocks(self.cin) * BLK;
        let mut t = if xi_outer {
            // One V_ξ slice (K·T floats) ≤ 256 KiB; V and M of the block then live in
            // L2/L3 but each is touched once per ξ.
            ((1 << 16) / k).clamp(8, 512)
        } else {
            // V (P·K·T floats) within ~768 KiB: with the U slices and M it stays in L2.
            ((192 * 1024) / (a * a * k)).clamp(8, 512)
        };
        // Parallel. Tasks are tile blocks × output-group splits; a group split
        // transforms its tiles again, a tile block streams its groups' weights again.
        // - Weights ≥ 8× the transformed input (ξ-outer with few tiles, e.g. 512@7
        //   batch 8): ≥ 4 tile blocks per thread while blocks keep ≥ 64 tiles, then
        //   group splits up to 2 tasks per thread (each task streams its share of the
        //   weights once: 512@7 F(4,3) batch 8 4.4 ms, 5.2 with 2 tile blocks).
        // - Else a multiple of the thread count of equal tile blocks, 2 per thread while
        //   blocks keep ≥ 12 tiles (group-outer), and group splits only when there are
        //   fewer tiles than threads (batch 1, 2 threads, against 4 tasks per thread
        //   made by group splits: 128@28 F(4,3) 0.41 -> 0.33 ms, 64@56 F(4,3) 0.38 ->
        //   0.35, 256@14 F(2,3) 0.55 -> 0.48).
        let ng = self.groups.len();
        let weight_bound = xi_outer && self.cout >= 8 * g;
        // - ξ-outer (weights > 3 MiB) with all tiles in one block of the size above (batch
        //   1, e.g. 256@14 F(2,3): 49 tiles): one block, output groups split per thread,
        //   so each thread streams half the weights (cold at batch 1) instead of all of
        //   them for half the tiles (256@14 F(2,3), batch 1, 2 threads, the five
        //   layers of a forward: 3.43-3.56 -> 3.21-3.34 ms). The tiles are transformed
        //   once, split by input blocks, into a V the splits share (`Phase`; before,
        //   once per split: paired per op, batch 1, 2 threads, 256@14 −0.23 ms over the
        //   five layers, 512@7 −0.23 over two).
        if threads > 1 && xi_outer && !weight_bound && g <= t && tunables().t.is_none() && tunables().split.is_none() {
            return (g, 1, threads.min(ng).max(1));
        }
        if threads > 1 {
            if weight_bound {
                t = t.min(g.div_ceil(4 * threads).max(64));
            } else {
                let want = if !xi_outer && g >= 24 * threads { 2 * threads } else { threads };
                let nblk = g.div_ceil(t).max(want).next_multiple_of(threads).min(g);
                t = g.div_ceil(nblk);
            }
        }
        if let Some(tt) = tunables().t {
            t = tt;
        }
        let t = t.min(g).max(1);
        let nblk = g.div_ceil(t);
        let t = g.div_ceil(nblk);
        let want = if weight_bound { 2 * threads } else { threads };
        let mut split = if threads > 1 && nblk < want { want.div_ceil(nblk) } else { 1 };
        if let Some(s) = tunables().split {
            split = s;
        }
        (t, nblk, split.clamp(1, ng))
    }

    /// Runs on `x` (Blk16, logical shape `xs`, `xs.c == cin`, zero padding lanes) into
    /// `y` (Blk16 `[n, cout, h, w]`), exactly as [`super::blocked::ConvBlk::run`]:
    /// `residual` (y's layout) added before the ReLU; every element of `y` written
    /// (padding lanes zero given a residual with zero padding lanes), `y` not read.
    /// Bitwise the same for any thread count.
    ///
    /// # Panics
    /// When `xs.c != cin` or a length does not match.
    pub fn run(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool) {
        self.run_impl(x, xs, y, residual, relu, None)
    }

    /// [`ConvWino::run`], also writing the channel means of the output (`means` `[n ·
    /// cout]`, the SE squeeze): each tile's stored outputs are summed in f32 in the
    /// output transform (at most 16 per channel), and the tiles' sums of an image added
    /// in f64 in tile order, so the means are bitwise the same for any thread count and
    /// for an image alone or in any batch (and within a few roundings of the mean of the
    /// stored outputs).
    ///
    /// # Panics
    /// As [`ConvWino::run`], or when `means` has the wrong length.
    pub fn run_squeeze(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool, means: &mut [f32]) {
        assert_eq!(means.len(), xs.n * self.cout, "conv_wino: means length");
        let m = self.tile.m();
        let (th, tw) = (xs.h.div_ceil(m), xs.w.div_ceil(m));
        let cob16 = blocks(self.cout) * BLK;
        // Every (tile, output channel) sum is stored by the run, so the reused buffer
        // needs no clearing.
        with_scratch(&SQ_PART, xs.n * th * tw * cob16, |part| {
            self.run_impl(x, xs, y, residual, relu, Some(part));
            let (tpi, hw) = (th * tw, (xs.h * xs.w) as f64);
            for (n, mn) in means.chunks_exact_mut(self.cout).enumerate() {
                for (ch, mv) in mn.iter_mut().enumerate() {
                    let s: f64 = (0..tpi).map(|t| part[(n * tpi + t) * cob16 + ch] as f64).sum();
                    *mv = (s / hw) as f32;
                }
            }
        })
    }

    fn run_impl(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool, sq: Option<&mut [f32]>) {
        assert_eq!(xs.c, self.cin, "conv_wino: input channels");
        assert_eq!(x.len(), blk16_len(xs), "conv_wino: input length");
        let ys = Shape4::new(xs.n, self.cout, xs.h, xs.w);
        let ylen = blk16_len(ys);
        assert_eq!(y.len(), ylen, "conv_wino: output length");
        if let Some(r) = residual {
            assert_eq!(r.len(), ylen, "conv_wino: residual length");
        }
        if ylen == 0 {
            return;
        }
        let level = simd::level();
        let m = self.tile.m();
        let a = self.tile.a();
        let p = a * a;
        let (th, tw) = (xs.h.div_ceil(m), xs.w.div_ceil(m));
        let g = xs.n * th * tw;
        let threads = crate::pool::threads_here();
        let xi_outer = self.xi_outer();
        let (t, nblk, nsplit) = self.plan(g, threads, xi_outer);
        let ng = self.groups.len();
        let splits: Vec<(usize, usize)> = (0..nsplit).map(|s| (s * ng / nsplit, (s + 1) * ng / nsplit)).collect();
        let (k2, k1, k1_32) = gemm_tables(level);
        let cb = blocks(self.cin);
        let ctx = Ctx {
            x: x.as_ptr(),
            y: y.as_mut_ptr(),
            res: residual.map_or(std::ptr::null(), |r| r.as_ptr()),
            h: xs.h,
            w: xs.w,
            th,
            tw,
            cb,
            cob: blocks(self.cout),
            t,
            g_total: g,
            nblk,
            groups: &self.groups,
            uoff: &self.uoff,
            splits: &splits,
            u: self.u.as_slice().as_ptr(),
            bias: self.bias.as_slice().as_ptr(),
            relu,
            sq: sq.map_or(std::ptr::null_mut(), |p| {
                assert_eq!(p.len(), g * blocks(self.cout) * BLK, "conv_wino: squeeze partials length");
                p.as_mut_ptr()
            }),
            xi_outer,
            k2,
            k1,
            k1_32,
        };
        let f = task_fn(level, self.tile);
        // V, then M of one group (group-outer) or of a split's groups (ξ-outer).
        let m_blocks = if xi_outer {
            splits
                .iter()
                .map(|&(a, b)| self.groups[a..b].iter().map(|g| g.1).sum::<usize>())
                .max()
                .unwrap_or(2)
        } else {
            2
        };
        let need = p * cb * t * BLK + p * m_blocks * t * BLK;
        let flops = xs.n * xs.h * xs.w * self.cin * self.cout * 9;
        if nblk == 1 && nsplit > 1 && threads > 1 && flops >= (1 << 18) {
            // One tile block split by output groups: transform it once into a shared V
            // (tasks by input blocks), then run the splits on it.
            return with_scratch(&SHARED_V, p * cb * t * BLK, |v| {
                let vp = super::SyncPtr(v.as_mut_ptr());
                let q = cb.min(2 * threads);
                // SAFETY: as below; transform task j writes only V's input blocks
                // j·cb/q..(j+1)·cb/q, and the compute tasks read V after all of them.
                for_each_task(q, true, |j| unsafe { f(&ctx, 0, 0, &mut [], Phase::Transform { cb0: j * cb / q, cb1: (j + 1) * cb / q, v: vp.get() }) });
                for_each_task(nsplit, true, |s| {
                    with_scratch(&SCRATCH, p * m_blocks * t * BLK, |scr| unsafe { f(&ctx, 0, s, scr, Phase::Compute { v: vp.get() }) })
                });
            });
        }
        for_each_task(nblk * nsplit, flops >= (1 << 18), |i| {
            let (blk, s) = (i / nsplit, i % nsplit);
            // SAFETY: `f` is the task kernel of `level = simd::level()`; x, residual,
            // u and bias are read inside their lengths (tiles are bounds-checked against
            // h, w; blocks < cb, cob); task (blk, s) writes only the outputs of its
            // tiles and its groups' blocks, which no other task writes.
            with_scratch(&SCRATCH, need, |scr| unsafe { f(&ctx, blk, s, scr, Phase::Whole) });
        });
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod asm_tests {
    use super::*;

    /// The AVX2 assembly GEMMs compute bitwise what `gemm_k` does, for both weight rows.
    #[test]
    fn avx2_assembly_gemms_match_the_generic_kernel_bitwise() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("skipped: no AVX2/FMA on this CPU");
            return;
        }
        let data = |len: usize, seed: usize| -> Vec<f32> {
            (0..len).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) * 1e-3).collect()
        };
        let (ncb, v_cb) = (5, 6 * 16 + 32);
        let v = data(ncb * v_cb, 1);
        let u = data(ncb * 16 * 32, 2);
        type Case = (usize, usize, GemmFn, GemmFn);
        let cases: [Case; 6] = [
            (16, 4, gemm_avx2::<4, 2>, gemm_avx2_asm4::<16>),
            (16, 5, gemm_avx2::<5, 2>, gemm_avx2_asm5::<16>),
            (16, 6, gemm_avx2::<6, 2>, gemm_avx2_asm6::<16>),
            (32, 4, gemm_avx2::<4, 2>, gemm_avx2_asm4::<32>),
            (32, 5, gemm_avx2::<5, 2>, gemm_avx2_asm5::<32>),
            (32, 6, gemm_avx2::<6, 2>, gemm_avx2_asm6::<32>),
        ];
        for (ws, n, generic, asm) in cases {
            for pf in [false, true] {
                let mut out = [vec![0.0f32; n * 16], vec![0.0f32; n * 16]];
                for (f, m) in [generic, asm].into_iter().zip(out.iter_mut()) {
                    let g = Gemm { v: v.as_ptr(), u: u.as_ptr(), m: m.as_mut_ptr(), ncb, v_cb, u_ci: ws, m_ob: 0, pf };
                    // SAFETY: V has ncb blocks of ≥ 6 tiles × 16, U ncb × 16 rows of 32, M n × 16.
                    unsafe { f(&g) };
                }
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out[0]), bits(&out[1]), "row {ws}, {n} tiles, pf {pf}");
                assert!(out[0].iter().any(|&x| x != 0.0));
            }
        }
    }
}
