//! The convolution GEMM: register-tiled microkernels (one generic body, instantiated per
//! ISA with its own tile shape), lazy im2col packing of B (`pack.rs`), cache blocking and
//! the parallel driver. Dense convolutions only; grouped ones run `grouped.rs`.
//!
//! A convolution is `C[M, N] = A[M, K] · B[K, N]` with M = output channels, K =
//! cin·kh·kw and N = n·oh·ow (the batch folded into N, so that 7×7 maps fill the NR-wide
//! panels across images), `B[(ci, ky, kx), (img, oy, ox)] = x[img, ci, oy·s − pad + ky,
//! ox·s − pad + kx]` (0 outside). NCHW makes each output channel a contiguous row of C
//! within an image, so the vector lanes run along N and one tile is MR channels × NR
//! positions; the per-channel bias is one broadcast per row and the residual has C's
//! layout.
//!
//! Layouts:
//! - packed A (built once, see `conv.rs`): per panel of MR rows (zero padded), `[K][MR]`;
//!   the K block `k0..k0+kc` of a panel is contiguous at offset `k0·MR`.
//! - packed B (per task, per K block, thread-local scratch): per panel of NR columns
//!   (zero padded), `[kc][NR]`.
//!
//! Loop order inside a task: K blocks (kc ≤ [`KC`]; B block packed once per K block)
//! → A panels (MR×kc, kept in L1) → B panels (streamed in order through the packed block,
//! which stays in L2) → microkernel. Measured on seresnet50 shapes, this beat the
//! B-panel-in-L1 order (kc 128–256) by 0–30%, most on the stem and 1×1 convolutions.
//!
//! Determinism: each output element is accumulated over k in increasing order, K block
//! by K block, with the blocking fixed by K alone: tile and task boundaries (which do
//! depend on the thread count) never change its arithmetic.

use super::for_each_task;
use super::pack::pack_b;
use crate::simd::SimdLevel;
use crate::vec::Vf32;
use std::cell::RefCell;

/// Upper bound of a K block (a tunable): kc·NR floats of B stay in L1, MC·kc of A in L2.
pub(crate) const KC: usize = 256;
/// Upper bound of a task's columns (a tunable, multiple of every NR).
const NC_MAX: usize = 512;
/// Upper bound of a task's rows (a tunable). A streams through L1 panel by panel (each
/// panel meets the whole packed B block in L2), so this bounds only how often B is
/// packed again: once per MC rows.
const MC_MAX: usize = 1024;
/// Largest MR·NR of any ISA (bounds the stack tile used for partial tiles).
const MAX_TILE: usize = 256;
/// Largest MR of any ISA.
const MAX_MR: usize = 8;

/// What the GEMM needs from an ISA beyond [`Vf32`]: its identity, to pick the ISA's
/// masked or permuting packing helpers (see `pack.rs`).
pub(crate) trait GemmIsa: Vf32 {
    const LEVEL: SimdLevel;
}
impl GemmIsa for f32 {
    const LEVEL: SimdLevel = SimdLevel::Scalar;
}
#[cfg(target_arch = "x86_64")]
impl GemmIsa for crate::vec::Avx2 {
    const LEVEL: SimdLevel = SimdLevel::Avx2;
}
#[cfg(target_arch = "x86_64")]
impl GemmIsa for crate::vec::Avx512 {
    const LEVEL: SimdLevel = SimdLevel::Avx512;
}
#[cfg(target_arch = "aarch64")]
impl GemmIsa for crate::vec::Neon {
    const LEVEL: SimdLevel = SimdLevel::Neon;
}

/// Register tile (MR rows, NR columns) of the microkernel used at `level`. Packed A
/// depends on MR, packed B on NR.
pub(crate) fn tile_shape(level: SimdLevel) -> (usize, usize) {
    match level {
        // 8×2 zmm accumulators: 16 FMAs per k for 8 broadcasts + 2 loads. MR = 8 divides
        // every channel count of the ResNet family, so no row of A is wasted.
        SimdLevel::Avx512 => (8, 32),
        // 6×2 ymm accumulators + 2 B vectors + 1 broadcast = 15 of 16 registers.
        SimdLevel::Avx2 => (6, 16),
        // 8×2 q accumulators (of 32 registers). Never compiled or run here (no aarch64
        // target installed): untested.
        SimdLevel::Neon => (8, 8),
        SimdLevel::Scalar => (4, 4),
    }
}

/// Geometry of one convolution call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub(crate) fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    pub(crate) fn m_g(&self) -> usize {
        self.cout / self.groups
    }
    pub(crate) fn k_g(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    pub(crate) fn nsp(&self) -> usize {
        self.oh * self.ow
    }
    /// B is the input itself (row stride h·w): 1×1, stride 1, no padding.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}

/// Pointers of one call; lengths were checked by the caller (`Conv2d::run`).
pub(crate) struct Call<'a> {
    pub g: Geom,
    pub x: *const f32,
    pub y: *mut f32,
    /// Null when there is no residual.
    pub res: *const f32,
    pub relu: bool,
    /// Packed weights for `tile_shape(level).0`.
    pub a: &'a [f32],
    /// `cout` values.
    pub bias: &'a [f32],
}

// SAFETY: `Call` is shared by the tasks of one parallel loop: x, res, a and bias are
// only read, and each task writes a disjoint set of y's elements (see `task`).
unsafe impl Sync for Call<'_> {}

/// How one call is split into K blocks and tasks; a function of the shape (and thread
/// count, which only moves task boundaries).
struct Plan {
    mr: usize,
    nr: usize,
    /// Size of every K block but possibly the last (K blocks are balanced).
    kc: usize,
    /// Columns per task (multiple of nr) and their number.
    nc: usize,
    n_nb: usize,
    /// A panels per task and their number.
    mp: usize,
    n_mb: usize,
    tasks: usize,
}

fn div_up(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

fn plan(g: &Geom, level: SimdLevel) -> Plan {
    let (mr, nr) = tile_shape(level);
    let kg = g.k_g();
    let kb = div_up(kg, KC).max(1);
    let kc = div_up(kg, kb).max(1);
    let ncols = g.n * g.nsp();
    let mpanels = div_up(g.m_g(), mr);
    let mut nc = div_up(ncols, nr).min(NC_MAX / nr).max(1) * nr;
    let mut mp = mpanels.min(MC_MAX / mr).max(1);
    let units = |nc: usize, mp: usize| g.groups * div_up(mpanels, mp) * div_up(ncols, nc);
    // Enough tasks to balance the pool, but no tile narrower than 2 panels of B or
    // shorter than 64 rows of A (packing B costs K·nc per task, shared by mp·mr rows).
    let target = 4 * crate::pool::num_threads();
    while units(nc, mp) < target {
        if nc > 2 * nr && nc >= mp * mr {
            nc = div_up(nc / 2, nr) * nr;
        } else if mp * mr > 64 {
            mp = div_up(mp, 2);
        } else if nc > 2 * nr {
            nc = div_up(nc / 2, nr) * nr;
        } else {
            break;
        }
    }
    let n_nb = div_up(ncols, nc);
    let n_mb = div_up(mpanels, mp);
    Plan { mr, nr, kc, nc, n_nb, mp, n_mb, tasks: g.groups * n_mb * n_nb }
}

/// Runs one convolution: `y = act(conv(x) + bias [+ res])` on every image and group.
pub(crate) fn conv(level: SimdLevel, c: &Call) {
    let g = &c.g;
    if g.n == 0 || g.cout == 0 || g.nsp() == 0 {
        return;
    }
    let p = plan(g, level);
    let flops = g.n * g.cout * g.nsp() * g.k_g();
    for_each_task(p.tasks, flops >= (1 << 20), |t| {
        PACK.with(|buf| {
            let mut buf = buf.borrow_mut();
            let need = p.kc * p.nc + p.nc + 16;
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
            // 64-byte alignment of the B panels: one cache line per zmm load.
            let off = buf.as_ptr().align_offset(64).min(15);
            let scratch = &mut buf[off..];
            run_task(level, c, &p, t, scratch);
        })
    });
}

thread_local! {
    /// Per-thread B packing buffer, grown to the largest kc·nc seen and then reused.
    static PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn run_task(level: SimdLevel, c: &Call, p: &Plan, t: usize, scratch: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(c: &Call, p: &Plan, t: usize, s: &mut [f32]) {
        unsafe { task::<crate::vec::Avx512, 8, 2>(c, p, t, s) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(c: &Call, p: &Plan, t: usize, s: &mut [f32]) {
        unsafe { task::<crate::vec::Avx2, 6, 2>(c, p, t, s) }
    }
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(c: &Call, p: &Plan, t: usize, s: &mut [f32]) {
        unsafe { task::<crate::vec::Neon, 8, 2>(c, p, t, s) }
    }
    debug_assert_eq!(tile_shape(level), (p.mr, p.nr));
    match level {
        // SAFETY: `level` comes from `simd::level()`, which only returns levels the CPU
        // supports; `c` was validated by `Conv2d::run` (see `task`).
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { avx512(c, p, t, scratch) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2(c, p, t, scratch) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => unsafe { neon(c, p, t, scratch) },
        // SAFETY: plain scalar code; `c` validated as above.
        _ => unsafe { task::<f32, 4, 4>(c, p, t, scratch) },
    }
}

/// One task: group `gi`, A panels `p0..p1`, columns `j0..j0+ncols` of the batch-folded
/// N (column j is image j / (oh·ow), position j % (oh·ow)): folding the batch into N
/// fills the panels of small feature maps (7×7 = 49 positions would pad to 64 per image).
///
/// # Safety
/// `c`'s pointers cover the full tensors of `c.g` (checked by `Conv2d::run`), `c.a` is
/// packed for MR, `scratch` holds at least `(p.kc + 1) · p.nc` floats, and V's ISA is
/// available.
#[inline(always)]
unsafe fn task<V: GemmIsa, const MR: usize, const NV: usize>(
    c: &Call,
    p: &Plan,
    t: usize,
    scratch: &mut [f32],
) {
    let nr = NV * V::LANES;
    let g = &c.g;
    let (nb, t) = (t % p.n_nb, t / p.n_nb);
    let (mb, gi) = (t % p.n_mb, t / p.n_mb);
    let (mg, kg, nsp) = (g.m_g(), g.k_g(), g.nsp());
    let mpanels = div_up(mg, MR);
    let j0 = nb * p.nc;
    let ncols = p.nc.min(g.n * nsp - j0);
    let npan = div_up(ncols, nr);
    let p0 = mb * p.mp;
    let p1 = (p0 + p.mp).min(mpanels);
    assert!(scratch.len() >= p.kc * p.nc + p.nc);
    assert!(c.a.len() >= g.groups * mpanels * kg * MR);

    // SAFETY (all pointer arithmetic below): offsets stay inside the tensors whose
    // lengths `Conv2d::run` checked: x has n·cin·h·w floats, y and res n·cout·oh·ow.
    // Tasks write disjoint parts of y: the rows of (group gi, panels p0..p1) × columns
    // j0..j0+ncols are a distinct set for each task index `t`.
    let x = c.x.add(gi * g.cin_g() * g.h * g.w);
    let out = Out {
        y: c.y.add(gi * mg * nsp),
        res: if c.res.is_null() { c.res } else { c.res.add(gi * mg * nsp) },
        nsp,
        istride: g.cout * nsp,
        relu: c.relu,
    };
    let bias = c.bias.as_ptr().add(gi * mg);
    let a_g = c.a.as_ptr().add(gi * mpanels * kg * MR);
    let b = scratch.as_mut_ptr();
    // SAFETY: scratch holds kc·nc floats for B, then nc for one im2col row.
    let tmp = b.add(p.kc * p.nc);

    let mut k0 = 0;
    while k0 < kg {
        let kc = p.kc.min(kg - k0);
        pack_b::<V>(b, tmp, x, g, k0, kc, j0, ncols, npan, nr);
        let first = k0 == 0;
        let last = k0 + kc == kg;
        for ip in p0..p1 {
            let ap = a_g.add((ip * kg + k0) * MR);
            let row = ip * MR;
            let rows = MR.min(mg - row);
            for jp in 0..npan {
                let col = j0 + jp * nr;
                let cols = nr.min(j0 + ncols - col);
                let bp = b.add(jp * kc * nr);
                tile::<V, MR, NV>(kc, ap, bp, &out, bias.add(row), row, rows, col, cols, first, last);
            }
        }
        k0 += kc;
    }
}

/// Where a group's output (and residual) columns live: column j of row r is at
/// `(j / nsp)·istride + r·nsp + j % nsp`.
struct Out {
    y: *mut f32,
    /// Null when there is no residual.
    res: *const f32,
    nsp: usize,
    istride: usize,
    relu: bool,
}

/// The epilogue of the last K block: `y = act(acc + bias[row] [+ res])`.
struct Epi {
    /// MR values (the tile's rows).
    bias: *const f32,
    /// Null, or the residual tile with row stride `ldr`.
    res: *const f32,
    ldr: usize,
    relu: bool,
}

/// One output tile: rows `row..row+rows` (≤ MR) × columns `col..col+cols` (≤ NR).
/// A full tile inside one image goes straight to the microkernel; other tiles (edges,
/// or spanning two images) through a stack tile, so the microkernel never reads or
/// writes outside the tensors. Both paths do the same arithmetic.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<V: Vf32, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    o: &Out,
    bias: *const f32,
    row: usize,
    rows: usize,
    col: usize,
    cols: usize,
    first: bool,
    last: bool,
) {
    let nr = NV * V::LANES;
    let img = col / o.nsp;
    let local = col - img * o.nsp;
    if rows == MR && cols == nr && local + cols <= o.nsp {
        let off = img * o.istride + row * o.nsp + local;
        #[cfg(target_arch = "x86_64")]
        if last {
            // The epilogue reads the residual and writes y: MR scattered rows that may
            // be far out in memory. Request them now; the kc FMA steps hide the latency.
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            for r in 0..MR {
                for line in (0..nr).step_by(16) {
                    if !o.res.is_null() {
                        _mm_prefetch::<_MM_HINT_T0>(o.res.add(off + r * o.nsp + line) as *const i8);
                    }
                    _mm_prefetch::<_MM_HINT_T0>(o.y.add(off + r * o.nsp + line) as *const i8);
                }
            }
        }
        let epi = Epi { bias, res: if o.res.is_null() { o.res } else { o.res.add(off) }, ldr: o.nsp, relu: o.relu };
        microkernel::<V, MR, NV>(kc, a, b, o.y.add(off), o.nsp, first, last.then_some(&epi));
        return;
    }
    const { assert!(MR * NV * V::LANES <= MAX_TILE && MR <= MAX_MR) };
    let mut ct = [0.0f32; MAX_TILE];
    let mut rt = [0.0f32; MAX_TILE];
    let mut bt = [0.0f32; MAX_MR];
    let (ctp, rtp) = (ct.as_mut_ptr(), rt.as_mut_ptr());
    // Calls f(offset of row 0 in y/res, first tile column, length) per image piece.
    let pieces = |f: &mut dyn FnMut(usize, usize, usize)| {
        let (mut im, mut lc, mut jt) = (img, local, 0);
        while jt < cols {
            let len = (cols - jt).min(o.nsp - lc);
            f(im * o.istride + row * o.nsp + lc, jt, len);
            jt += len;
            im += 1;
            lc = 0;
        }
    };
    // SAFETY: reads/writes stay within `rows × cols` of the tile (inside the tensors,
    // piece by piece) and within the MR×NR stack arrays.
    pieces(&mut |off, jt, len| {
        for r in 0..rows {
            if !first {
                std::ptr::copy_nonoverlapping(o.y.add(off + r * o.nsp), ctp.add(r * nr + jt), len);
            }
            if last && !o.res.is_null() {
                std::ptr::copy_nonoverlapping(o.res.add(off + r * o.nsp), rtp.add(r * nr + jt), len);
            }
        }
    });
    if last {
        std::ptr::copy_nonoverlapping(bias, bt.as_mut_ptr(), rows);
    }
    let et = Epi { bias: bt.as_ptr(), res: if o.res.is_null() { o.res } else { rtp }, ldr: nr, relu: o.relu };
    microkernel::<V, MR, NV>(kc, a, b, ctp, nr, first, last.then_some(&et));
    pieces(&mut |off, jt, len| {
        for r in 0..rows {
            std::ptr::copy_nonoverlapping(ctp.add(r * nr + jt), o.y.add(off + r * o.nsp), len);
        }
    });
}

/// The register-tiled kernel: `C[MR × NR] (+)= A_panel[kc][MR] · B_panel[kc][NR]`, then
/// the epilogue when `epi` is given. When `first`, C is not read (the accumulators start
/// at 0); otherwise they start from C (the sum of the earlier K blocks).
///
/// # Safety
/// `a` holds kc·MR floats, `b` kc·NR, `c` (and `epi.res`) MR rows of NR floats at row
/// stride `ldc` (`epi.ldr`), `epi.bias` MR floats; V's ISA is available.
#[inline(always)]
// Index loops over the register tile read as the tile they unroll into.
#[allow(clippy::needless_range_loop)]
unsafe fn microkernel<V: Vf32, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    first: bool,
    epi: Option<&Epi>,
) {
    let l = V::LANES;
    let nr = NV * l;
    let mut acc = [[V::zero(); NV]; MR];
    if !first {
        for r in 0..MR {
            for v in 0..NV {
                acc[r][v] = V::load(c.add(r * ldc + v * l));
            }
        }
    }
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let mut bv = [V::zero(); NV];
        for v in 0..NV {
            bv[v] = V::load(b.add(v * l));
        }
        for r in 0..MR {
            let av = V::splat(*a.add(r));
            for v in 0..NV {
                acc[r][v] = av.mul_add(bv[v], acc[r][v]);
            }
        }
        a = a.add(MR);
        b = b.add(nr);
    }
    match epi {
        None => {
            for r in 0..MR {
                for v in 0..NV {
                    acc[r][v].store(c.add(r * ldc + v * l));
                }
            }
        }
        Some(e) => {
            let zero = V::zero();
            for r in 0..MR {
                let bias = V::splat(*e.bias.add(r));
                for v in 0..NV {
                    let mut s = acc[r][v].add(bias);
                    if !e.res.is_null() {
                        s = s.add(V::load(e.res.add(r * e.ldr + v * l)));
                    }
                    if e.relu {
                        s = s.max(zero);
                    }
                    s.store(c.add(r * ldc + v * l));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ceiling of the AVX-512 microkernel with A and B in L1 (prints GFLOP/s, best of 5).
    /// `cargo test --release -p senet-kernels microkernel_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    #[cfg(target_arch = "x86_64")]
    fn microkernel_speed() {
        if !SimdLevel::Avx512.is_supported() {
            return;
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn bench(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], reps: usize) {
            for _ in 0..reps {
                microkernel::<crate::vec::Avx512, 8, 2>(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), 32, false, None);
            }
        }
        for kc in [64usize, 128, 256] {
            let a = vec![0.5f32; kc * 8];
            let b = vec![0.25f32; kc * 32];
            let mut c = vec![0.0f32; 8 * 32];
            let reps = 20_000_000 / kc;
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t0 = std::time::Instant::now();
                // SAFETY: AVX-512 checked above; buffers sized for the kernel.
                unsafe { bench(kc, &a, &b, &mut c, reps) };
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!("kc {kc}: {:.1} GFLOP/s", 2.0 * (8 * 32 * kc * reps) as f64 / best / 1e9);
        }
    }

    /// One task's inner loops (A panels outer, B panels inner, as in `task`) on packed
    /// blocks, for several tile shapes and K blocks. Prints GFLOP/s (wall, best of 3).
    /// `cargo test --release -p senet-kernels block_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    #[cfg(target_arch = "x86_64")]
    fn block_speed() {
        if !SimdLevel::Avx512.is_supported() {
            return;
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const MR: usize, const NV: usize>(kc: usize, mp: usize, npan: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize) {
            let nr = NV * 16;
            for ip in 0..mp {
                for jp in 0..npan {
                    microkernel::<crate::vec::Avx512, MR, NV>(kc, a.as_ptr().add(ip * kc * MR), b.as_ptr().add(jp * kc * nr), c.as_mut_ptr().add(ip * MR * ldc + jp * nr), ldc, false, None);
                }
            }
        }
        fn bench<const MR: usize, const NV: usize>(rows: usize, cols: usize, kc: usize) -> f64 {
            let (mp, npan) = (rows.div_ceil(MR), cols.div_ceil(NV * 16));
            let a = vec![0.5f32; kc * MR * mp];
            let b = vec![0.25f32; kc * NV * 16 * npan];
            let ldc = NV * 16 * npan;
            let mut c = vec![0.0f32; MR * mp * ldc];
            let flop = 2.0 * (rows * cols * kc) as f64; // useful flops only
            let reps = (2e9 / flop) as usize + 1;
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    // SAFETY: AVX-512 checked; buffers sized for every tile.
                    unsafe { run::<MR, NV>(kc, mp, npan, &a, &b, &mut c, ldc) };
                }
                best = best.min(t0.elapsed().as_secs_f64());
            }
            flop * reps as f64 / best / 1e9
        }
        for (rows, cols) in [(64usize, 512usize), (256, 512), (256, 196), (256, 49)] {
            for kc in [128usize, 256] {
                println!(
                    "M {rows:3} N {cols:3} kc {kc:3}: 8x32 {:6.1}  12x32 {:6.1}  14x32 {:6.1}  16x16 {:6.1}  6x64 {:6.1}",
                    bench::<8, 2>(rows, cols, kc),
                    bench::<12, 2>(rows, cols, kc),
                    bench::<14, 2>(rows, cols, kc),
                    bench::<16, 1>(rows, cols, kc),
                    bench::<6, 4>(rows, cols, kc),
                );
            }
        }
    }
}
