//! Channel-blocked activations (`Blk16`, oneDNN's nChw16c) and the ops that run on them,
//! so that a whole forward pass can stay blocked from the stem to the head.
//!
//! **Layout `Blk16`** of a logical [N, C, H, W] tensor: `[N][⌈C/16⌉][H][W][16]`, i.e.
//! element (n, c, h, w) at `(((n·CB + c/16)·H + h)·W + w)·16 + c%16`, CB = ⌈C/16⌉.
//! The 16 channels of a pixel are one AVX-512 vector, so per-channel work (bias, SE
//! gates, squeeze sums) vectorizes with no shuffles. **Invariant:** the padding lanes
//! (channels C..16·CB) hold zeros. [`nchw_to_blk16`] writes them, every op here keeps
//! them zero (given zero-padded inputs), and [`ConvBlk`] relies on it (its padded
//! weights are zero, and 0·NaN would not be).
//!
//! - [`ConvBlk`]: direct convolution (weights prepacked once to
//!   `[Cout/16][Cin/16][kh][kw][16 ci][16 co]`), bias + residual + ReLU fused.
//! - [`nchw_to_blk16`], [`blk16_to_nchw`]: the two conversions at the ends of a network.
//! - `blocked_ops.rs`: max pool, global average pool, add(+ReLU), the SE block.
//!
//! All ops run on the crate pool and are bitwise deterministic for any thread count.
//!
//! **Alignment:** hand these ops 64-byte-aligned buffers where you can (a Blk16 pixel
//! is one cache line; unaligned outputs make every store a split store: ~10% on 1×1
//! layers with 56×56 maps). Packed weights and scratch are aligned internally. Any
//! alignment is correct.

use crate::aligned::{with_scratch, Aligned};
use super::{for_each_task, SyncPtr};
use crate::simd::{self, SimdLevel};
use crate::vec::Vf32;
use crate::Shape4;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock, RwLock};

#[path = "blocked_kernel.rs"]
pub(super) mod kernel;
#[path = "blocked_ops.rs"]
mod ops;

pub use ops::{add_relu_blk16, global_avg_pool_blk16, max_pool2d_blk16, se_block_blk16, se_scale_blk16, squeeze_blk16};

use kernel::{block_counts, kernels, kernels_rows2, Tile};

/// The AVX2 microkernel's sixteen reduction steps of a 6-pixel tile (see
/// `blocked_kernel.rs`), for `examples/step_ceiling.rs`, which times the shipped step
/// against a register-only FMA loop.
#[doc(hidden)]
#[cfg(target_arch = "x86_64")]
pub use kernel::avx2_step16_6;

/// Channels per block.
pub const BLK: usize = 16;

/// Number of 16-channel blocks holding `c` channels.
pub fn blocks(c: usize) -> usize {
    c.div_ceil(BLK)
}

/// Length in floats of a Blk16 tensor of logical shape `s` (channels padded to 16).
pub fn blk16_len(s: Shape4) -> usize {
    s.n * blocks(s.c) * s.h * s.w * BLK
}

/// NCHW → Blk16. `x` has `s.len()` floats, `y` [`blk16_len`]`(s)`; padding lanes are
/// written as zeros. Parallel over (image, block).
///
/// # Panics
/// When a length does not match the shape.
pub fn nchw_to_blk16(x: &[f32], s: Shape4, y: &mut [f32]) {
    assert_eq!(Some(x.len()), s.len(), "nchw_to_blk16: input length");
    assert_eq!(y.len(), blk16_len(s), "nchw_to_blk16: output length");
    let (cb, hw) = (blocks(s.c), s.hw());
    let yp = SyncPtr(y.as_mut_ptr());
    for_each_task(s.n * cb, y.len() >= crate::pool::PAR_GRAIN, |t| {
        let (n, b) = (t / cb, t % cb);
        let c0 = b * BLK;
        let nc = BLK.min(s.c - c0);
        // SAFETY: block (n, b) of y (hw·16 floats at t·hw·16) belongs to task t only.
        let yb = unsafe { std::slice::from_raw_parts_mut(yp.get().add(t * hw * BLK), hw * BLK) };
        let xb = &x[(n * s.c + c0) * hw..(n * s.c + c0 + nc) * hw];
        // 16 pixels at a time: 16 planes' short runs in, one contiguous 1 KB run out.
        for p0 in (0..hw).step_by(BLK) {
            let p1 = (p0 + BLK).min(hw);
            let out = &mut yb[p0 * BLK..p1 * BLK];
            for (p, o) in (p0..p1).zip(out.chunks_exact_mut(BLK)) {
                for l in 0..nc {
                    o[l] = xb[l * hw + p];
                }
                o[nc..].fill(0.0);
            }
        }
    });
}

/// Blk16 → NCHW (padding lanes dropped). `x` has [`blk16_len`]`(s)` floats, `y`
/// `s.len()`. Parallel over (image, block).
///
/// # Panics
/// When a length does not match the shape.
pub fn blk16_to_nchw(x: &[f32], s: Shape4, y: &mut [f32]) {
    assert_eq!(x.len(), blk16_len(s), "blk16_to_nchw: input length");
    assert_eq!(Some(y.len()), s.len(), "blk16_to_nchw: output length");
    let (cb, hw) = (blocks(s.c), s.hw());
    let yp = SyncPtr(y.as_mut_ptr());
    for_each_task(s.n * cb, x.len() >= crate::pool::PAR_GRAIN, |t| {
        let (n, b) = (t / cb, t % cb);
        let c0 = b * BLK;
        let nc = BLK.min(s.c - c0);
        // SAFETY: planes c0..c0+nc of image n (contiguous in y) belong to task t only.
        let yb = unsafe { std::slice::from_raw_parts_mut(yp.get().add((n * s.c + c0) * hw), nc * hw) };
        let xb = &x[t * hw * BLK..(t + 1) * hw * BLK];
        for p0 in (0..hw).step_by(BLK) {
            let p1 = (p0 + BLK).min(hw);
            for l in 0..nc {
                for p in p0..p1 {
                    yb[l * hw + p] = xb[p * BLK + l];
                }
            }
        }
    });
}

/// A convolution on Blk16 activations with folded-BatchNorm bias, optional residual and
/// ReLU: `y = act(conv(x, weight) + bias [+ residual])`.
///
/// Built once per layer from PyTorch weights. Dense convolutions pack weights as
/// `[Cout/16][Cin/16][kh][kw][16 ci][16 co]` (zero padded). Grouped ones become
/// block-diagonal: output block `ob` stores (and reads) only the input blocks that hold
/// its groups' channels (one 16×16 block for ResNeXt's 4/8/16 channels per group, the
/// group's own blocks when it has multiples of 16). Convolutions with fewer than 16
/// input channels (the stem) pack `[Cout/16][kh][kw][cin][16 co]` so no lane is wasted,
/// and can read NCHW input directly ([`ConvBlk::run_nchw`]).
///
/// The kernel (`blocked_kernel.rs`) keeps a tile of RW pixels of one output row × NB
/// output blocks in registers (AVX-512: up to 14 px × 2 blocks, 8 × 3 on rows ≤ 8 px,
/// 6 × 4 on 1×1 layers with short reductions and on the 3-channel stem, 24 × 1 for grouped layers; AVX2: 6 px × 1 block of 2 ymm; scalar 4 × 16), reduces
/// over input blocks, ky, kx, channel, and applies bias/residual/ReLU before the one
/// store. Left/right padding is materialized in a per-call copy of the input with zero
/// columns (top/bottom padding just narrows ky), so the hot loop has no border branch.
/// 1×1/1 layers tile the flattened h·w pixels; strided 1×1 layers run on a subsampled
/// copy. Weights for NB > 1 are interleaved per tile group on first use.
///
/// Determinism: every output is reduced in the fixed order (input block, ky, kx,
/// channel) by one task; tiling, loop order and thread count only change speed.
pub struct ConvBlk {
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    /// Input channels per block: 16, or `cin` when `cin < 16` (dense only).
    cpb: usize,
    /// Per output block: first input block read and how many.
    ib0: Vec<usize>,
    nib: Vec<usize>,
    /// Per output block: offset of its weights in `w`.
    woff: Vec<usize>,
    /// Every output block reads the same input blocks (dense): tiles may span several
    /// output blocks and share the input broadcasts.
    uniform: bool,
    /// The packed weights, by tile width NB (index): NB = 1 is per output block,
    /// `[cb][kh][kw][cpb][16]` at `woff[ob]`; NB > 1 (dense only) interleaves groups of
    /// output blocks (`[cb][kh][kw][cpb][g·16]` at `woff[ob0]`, see [`block_groups`]).
    /// A packing is derived from whichever one exists when a call first needs it, and a
    /// dense layer then drops the others: one input size keeps one copy of the weights.
    packs: RwLock<[Option<Packing>; 5]>,
    /// `16·⌈cout/16⌉` values, zero padded.
    bias: Aligned,
}

/// What a conv run does besides `act(conv + bias [+ residual])`.
#[derive(Clone, Copy)]
enum Epi<'a> {
    Plain,
    /// SE gates per image and channel (`n · ⌈cout/16⌉·16`), applied to each tile after
    /// the kernel: `act((conv + bias) · gate + residual)`.
    Gate(&'a [f32]),
    /// Per-image weights (`n ×` the packing of tile width `nb`, `counts`, which the run
    /// then uses whatever another call packed meanwhile) and bias (`n · ⌈cout/16⌉·16`)
    /// replacing the layer's own.
    Scaled { w: &'a [f32], bias: &'a [f32], nb: usize, counts: &'static [usize] },
}

/// One weight packing of a [`ConvBlk`]: the weights and the tile widths
/// ([`block_groups`] `counts`) its groups were formed with.
struct Packing {
    w: Arc<Aligned>,
    counts: &'static [usize],
}

/// Measurement overrides, read once from the environment: `SENET_BLK_NB=1|2|3|4` forces
/// the output blocks per tile of dense layers, `SENET_BLK_ROWS2=0` disables two-row
/// tiles, `SENET_BLK_MEMCHUNKS=0` the memory-sized chunks of batch-1 layers (see
/// `exec_view`), `SENET_BLK_TAPS=0` the tap planes of strided k×k layers (`run_taps`).
/// They change speed only, never results.
struct Tunables {
    nb: Option<usize>,
    rows2: bool,
    no_mem_chunks: bool,
    taps: bool,
}

/// Parses a Linux sysfs cache size ("512K", "2048K", "32M", "1024").
fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().filter(|&n| n > 0).and_then(|n| n.checked_mul(mult))
}

/// The per-core L2 size in bytes: [`set_l2_bytes`]'s value if set, else
/// `SENET_L2_BYTES` if set (tuning), else Linux's sysfs entry for cpu0's level-2 cache,
/// else 1 MiB.
fn l2_bytes() -> usize {
    let o = L2_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed);
    if o != 0 {
        return o;
    }
    static L2: OnceLock<usize> = OnceLock::new();
    *L2.get_or_init(|| {
        if let Some(b) = std::env::var("SENET_L2_BYTES").ok().and_then(|v| parse_cache_size(&v)) {
            return b;
        }
        (0..8)
            .find_map(|i| {
                let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
                let level = std::fs::read_to_string(format!("{dir}/level")).ok()?;
                if level.trim() != "2" {
                    return None;
                }
                parse_cache_size(&std::fs::read_to_string(format!("{dir}/size")).ok()?)
            })
            .unwrap_or(1 << 20)
    })
}

static L2_OVERRIDE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// [`set_taps`]'s override: 0 none (the environment decides), 1 on, 2 off.
static TAPS_OVERRIDE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Turns the tap planes of strided k×k layers ([`ConvBlk`]'s `run_taps`) on or off
/// (`None`: back to the default, on unless `SENET_BLK_TAPS=0`), for tests that compare
/// both paths and for in-process measurements. Speed only: both paths compute the same
/// values.
#[doc(hidden)]
pub fn set_taps(on: Option<bool>) {
    TAPS_OVERRIDE.store(on.map_or(0, |o| if o { 1 } else { 2 }), std::sync::atomic::Ordering::Relaxed);
}

fn taps_enabled() -> bool {
    match TAPS_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => tunables().taps,
    }
}

/// Overrides the L2 size the convolutions' loop-order rules assume (`None`: back to the
/// detected one), for tests that drive every loop order on one machine. Speed only:
/// every order computes the same bits, so calls running meanwhile stay correct.
#[doc(hidden)]
pub fn set_l2_bytes(bytes: Option<usize>) {
    L2_OVERRIDE.store(bytes.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// A core's L2 in floats, which [`ConvBlk::exec_view`]'s loop-order rules count as
/// staying in L2: 256 Ki (1 MiB) on the Xeon those rules were measured on, 128 Ki on a
/// Zen 3 core (512 KiB).
fn l2_budget_floats() -> usize {
    (l2_bytes() / std::mem::size_of::<f32>()).max(1 << 14)
}

fn tunables() -> &'static Tunables {
    static T: OnceLock<Tunables> = OnceLock::new();
    T.get_or_init(|| Tunables {
        nb: std::env::var("SENET_BLK_NB").ok().and_then(|v| v.parse().ok()),
        rows2: std::env::var("SENET_BLK_ROWS2").map_or(true, |v| v != "0"),
        no_mem_chunks: std::env::var("SENET_BLK_MEMCHUNKS").is_ok_and(|v| v == "0"),
        taps: std::env::var("SENET_BLK_TAPS").map_or(true, |v| v != "0"),
    })
}

/// Splits `cob` output blocks into tile groups (first block, count): greedily the
/// widest count ≤ `nb` among `counts` (widest first) that still fits.
fn block_groups(cob: usize, nb: usize, counts: &[usize]) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut ob = 0;
    while ob < cob {
        let g = *counts.iter().find(|&&c| c <= nb && c <= cob - ob).unwrap_or(&1);
        groups.push((ob, g));
        ob += g;
    }
    groups
}

/// Weight prefetch of layers with long reductions: at least `PF_MIN_K` input channels, this
/// many input blocks ahead.
const PF_MIN_K: usize = 256;
const PF_BLOCKS: usize = 2;
/// The same for k×k layers (k > 1), whose input block spans k² times the steps.
const PF_BLOCKS_KXK: usize = 1;
/// Tiles per kernel call in tile-outer order (each run of pixels goes through every
/// output group while its input is in L1).
const TILE_OUTER_RUN: usize = 4;
/// Tiles per kernel call when the SE gate pass or the squeeze's partial sums follow the
/// call (on the run's outputs while they are in L1: 8 tiles of 6 pixels are 3 KiB per
/// output block).
const GATED_RUN: usize = 8;

/// Input floats between consecutive output pixels of a row.
fn view_px(v: &XView, stride: usize) -> usize {
    v.col * stride
}

thread_local! {
    /// The column-padded input copy of the calling thread (reused across calls).
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The per-image gated weight and bias copies of the calling thread (`run_gated`).
    static GATED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// How `run` addresses its input after the optional padding copy.
#[derive(Clone, Copy)]
struct XView {
    p: *const f32,
    /// Floats per image, per input block, per input row, per column, per channel.
    img: usize,
    cb: usize,
    row: usize,
    col: usize,
    ci: usize,
    /// Tap planes ([`ConvBlk::run_taps`]): per input block, one plane of the oh·ow
    /// output pixels per kernel tap (`row` per ky, `col` per kx), 16 floats per pixel.
    taps: bool,
}

impl ConvBlk {
    /// Packs `weight` [cout, cin/groups, kh, kw] (PyTorch order) and `bias` `[cout]`.
    ///
    /// # Panics
    /// On inconsistent hyper-parameters: a zero size, stride or group count, channels
    /// not divisible by `groups`, or a buffer of the wrong length.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        cin: usize,
        cout: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> ConvBlk {
        assert!(cin > 0 && cout > 0 && kh > 0 && kw > 0 && stride > 0 && groups > 0, "conv_blk: zero size");
        assert!(cin.is_multiple_of(groups) && cout.is_multiple_of(groups), "conv_blk: channels not divisible by groups");
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        assert_eq!(weight.len(), cout * cin_g * kh * kw, "conv_blk: weight length");
        assert_eq!(bias.len(), cout, "conv_blk: bias length");
        let cpb = if groups == 1 && cin < BLK { cin } else { BLK };
        let cob = blocks(cout);
        let (mut ib0, mut nib, mut woff) = (Vec::new(), Vec::new(), Vec::new());
        let per_block = kh * kw * cpb * BLK;
        let mut total = 0;
        for ob in 0..cob {
            // Groups of this block's output channels, and the input blocks they read.
            let (o0, o1) = (ob * BLK, (ob * BLK + BLK).min(cout) - 1);
            let (g0, g1) = (o0 / cout_g, o1 / cout_g);
            let (i0, i1) = (g0 * cin_g, (g1 + 1) * cin_g - 1);
            let (b0, b1) = (i0 / cpb, i1 / cpb);
            ib0.push(b0);
            nib.push(b1 - b0 + 1);
            woff.push(total);
            total += (b1 - b0 + 1) * per_block;
        }
        let mut wa = Aligned::zeroed(total);
        let w = wa.as_mut_slice();
        for ob in 0..cob {
            for lb in 0..nib[ob] {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for ci in 0..cpb {
                            let i = (ib0[ob] + lb) * cpb + ci;
                            for co in 0..BLK {
                                let o = ob * BLK + co;
                                if o >= cout || i >= cin || i / cin_g != o / cout_g {
                                    continue;
                                }
                                let il = i - (o / cout_g) * cin_g;
                                w[woff[ob] + (((lb * kh + ky) * kw + kx) * cpb + ci) * BLK + co] =
                                    weight[((o * cin_g + il) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
            }
        }
        let uniform = ib0.iter().all(|&b| b == ib0[0]) && nib.iter().all(|&b| b == nib[0]);
        let mut b = Aligned::zeroed(cob * BLK);
        b.as_mut_slice()[..cout].copy_from_slice(bias);
        ConvBlk { cin, cout, kh, kw, stride, pad, groups, cpb, ib0, nib, woff, uniform, packs: RwLock::new([None, Some(Packing { w: Arc::new(wa), counts: &[1] }), None, None, None]), bias: b }
    }

    /// Input channels.
    pub fn cin(&self) -> usize {
        self.cin
    }

    /// Output channels.
    pub fn cout(&self) -> usize {
        self.cout
    }

    /// `k×k/stride pad g=groups`, for profiles and messages.
    pub fn describe(&self) -> String {
        format!("{}x{}/{} p{} g{} blk16", self.kh, self.kw, self.stride, self.pad, self.groups)
    }

    /// Output height and width for an h×w input (`floor((h + 2·pad − kh)/stride) + 1`);
    /// None when the padded input is smaller than the kernel.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let oh = (h + 2 * self.pad).checked_sub(self.kh)? / self.stride + 1;
        let ow = (w + 2 * self.pad).checked_sub(self.kw)? / self.stride + 1;
        Some((oh, ow))
    }

    /// Runs on `x` in Blk16 layout (logical shape `xs`, `xs.c == cin`, padding lanes
    /// zero) into `y` in Blk16 layout [n, cout, oh, ow] ([`ConvBlk::output_hw`]).
    /// `residual`, when given, has y's layout and is added before the ReLU. Every
    /// element of `y` is written (padding lanes get zeros, given a residual with zero
    /// padding lanes); `y` is not read. Bitwise the same for any thread count.
    ///
    /// # Panics
    /// When `xs.c != cin`, the output size is undefined, or a length does not match.
    pub fn run(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool) {
        self.run_impl(x, xs, y, residual, relu, None, Epi::Plain)
    }

    /// [`ConvBlk::run`] that also returns the channel means of its output (the SE
    /// squeeze) in `means` [n · cout]: each tile sums its outputs right after storing
    /// them, while they are in L1, so the SE block that follows needs no squeeze pass
    /// over the activation. Tile sums are reduced in a fixed order (in f64), so the
    /// means too are the same for any thread count.
    pub fn run_squeeze(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool, means: &mut [f32]) {
        assert_eq!(means.len(), xs.n * self.cout, "conv_blk: means length");
        self.run_impl(x, xs, y, residual, relu, Some(means), Epi::Plain)
    }

    /// Whether this layer can apply an SE block's gates in its epilogue from the means
    /// of its input ([`ConvBlk::dense_matrix`], [`ConvBlk::run_gated`]): a dense 1×1,
    /// stride-1, unpadded convolution of at least 16 input channels (an SE-ResNet's
    /// conv3). Such a layer is linear per pixel, so the channel means of its output are
    /// the layer applied to the channel means of its input.
    pub fn gate_fusable(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0 && self.groups == 1 && self.cpb == BLK
    }

    /// [`ConvBlk::run`] with an SE block's gates applied in the epilogue:
    /// `y = act((conv(x) + bias) · gate [+ residual])`, `gates` [n · ⌈cout/16⌉·16] per
    /// image and channel (padding lanes zero). Where the map has fewer than 8 pixels per
    /// input channel, each tile is scaled right after the kernel stores it (exactly the
    /// multiply and add of the separate SE scale pass); on larger maps the gates are
    /// folded into per-image copies of the weights and bias (the same up to rounding).
    /// Either way bitwise the same for any thread count, and for an image alone or in
    /// any batch (the choice depends on the image size only).
    ///
    /// # Panics
    /// As [`ConvBlk::run`], or when `gates` has the wrong length.
    pub fn run_gated(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool, gates: &[f32]) {
        assert!(self.gate_fusable(), "conv_blk: run_gated needs a dense 1×1/1 layer");
        let cob = blocks(self.cout);
        assert_eq!(gates.len(), xs.n * cob * BLK, "conv_blk: gates length");
        if xs.h * xs.w < 8 * self.cin {
            return self.run_impl(x, xs, y, residual, relu, None, Epi::Gate(gates));
        }
        // Weights small beside the activation (≥ 8 pixels per input channel): the gates
        // folded into per-image copies of the packed weights and the bias,
        // (W·x + b)·g = (g⊙W)·x + g⊙b, so the tiles run the plain kernel with the
        // residual and ReLU in its epilogue and no pass after it (seresnet50 batch 1,
        // 1 thread, the three 64→256 @56 layers: 3.93 → 3.64 ms; the 128→512 @28 ones,
        // whose copies are 4× larger per pixel, 4.32 → 4.46 ms, so they keep the pass).
        let level = simd::level();
        let (nb, counts) = self.tile_nb(level, true, false, xs.h * xs.w);
        let groups = block_groups(cob, nb, counts);
        let wpack = self.packed(nb, counts);
        let wl = wpack.as_slice().len();
        let steps = self.nib[0] * self.cpb; // rows of g·16 weights per group (1×1)
        let n = xs.n;
        // Every float of both copies is written below (the groups tile the packing).
        with_scratch(&GATED, n * wl + n * cob * BLK, |scr| {
            let (sw, sb) = scr.split_at_mut(n * wl);
            let src = wpack.as_slice();
            let swp = SyncPtr(sw.as_mut_ptr());
            for_each_task(n * groups.len(), n * wl >= crate::pool::PAR_GRAIN, |t| {
                let (i, gi) = (t / groups.len(), t % groups.len());
                let (ob0, g) = groups[gi];
                let gv = &gates[(i * cob + ob0) * BLK..][..g * BLK];
                let len = steps * g * BLK;
                // SAFETY: image i's copy of group gi's weights (len floats at
                // i·wl + woff[ob0] < n·wl) belongs to this task only.
                let d = unsafe { std::slice::from_raw_parts_mut(swp.get().add(i * wl + self.woff[ob0]), len) };
                for (dr, sr) in d.chunks_exact_mut(g * BLK).zip(src[self.woff[ob0]..][..len].chunks_exact(g * BLK)) {
                    for ((o, &w), &gg) in dr.iter_mut().zip(sr).zip(gv) {
                        *o = w * gg;
                    }
                }
            });
            let b = self.bias.as_slice();
            for (i, d) in sb.chunks_exact_mut(cob * BLK).enumerate() {
                for ((o, &bb), &gg) in d.iter_mut().zip(b).zip(&gates[i * cob * BLK..(i + 1) * cob * BLK]) {
                    *o = bb * gg;
                }
            }
            self.run_impl(x, xs, y, residual, relu, None, Epi::Scaled { w: sw, bias: sb, nb, counts })
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_impl(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool, sq: Option<&mut [f32]>, epi: Epi<'_>) {
        assert_eq!(xs.c, self.cin, "conv_blk: input channels");
        assert_eq!(x.len(), blk16_len(xs), "conv_blk: input length");
        let (h, w) = (xs.h, xs.w);
        let cb = blocks(xs.c);
        // In Blk16, a narrow (cpb < 16) input still occupies one 16-lane block.
        let view = XView { p: x.as_ptr(), img: cb * h * w * BLK, cb: h * w * BLK, row: w * BLK, col: BLK, ci: 1, taps: false };
        if self.kh == 1 && self.kw == 1 && self.pad == 0 && self.stride > 1 {
            return self.run_subsampled(x, xs, y, residual, relu, sq, epi);
        }
        self.exec(view, x, xs, BLK, cb, y, residual, relu, sq, epi);
    }

    /// A strided 1×1 convolution (the downsample shortcut) is a 1×1/1 convolution of
    /// the subsampled input: copy every stride-th pixel once (a small pass: 1/s² of the
    /// input), then run the flat path, whose tiles span rows (49 pixels of a 7×7 map in
    /// 4 tiles of 12–13 pixels × 2 blocks instead of 7 tiles of 7 × 3 blocks: fewer weight
    /// reloads from L2).
    #[allow(clippy::too_many_arguments)]
    fn run_subsampled(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool, sq: Option<&mut [f32]>, epi: Epi<'_>) {
        let (oh, ow) = self.output_hw(xs.h, xs.w).expect("conv_blk: input smaller than the kernel");
        let ylen = xs.n * blocks(self.cout) * oh * ow * BLK;
        assert_eq!(y.len(), ylen, "conv_blk: output length");
        if let Some(r) = residual {
            assert_eq!(r.len(), ylen, "conv_blk: residual length");
        }
        if let Epi::Gate(g) = epi {
            assert_eq!(g.len(), xs.n * blocks(self.cout) * BLK, "conv_blk: gates length");
        }
        if ylen == 0 {
            return;
        }
        let (h, w, s) = (xs.h, xs.w, self.stride);
        let cb = blocks(xs.c);
        let rows = xs.n * cb * oh;
        let need = rows * ow * BLK;
        with_scratch(&PADDED, need, |dst| {
            let dp = SyncPtr(dst.as_mut_ptr());
            for_each_task(rows.div_ceil(64), need >= crate::pool::PAR_GRAIN, |t| {
                for r in t * 64..(t * 64 + 64).min(rows) {
                    let (plane, oy) = (r / oh, r % oh);
                    let src = &x[(plane * h + oy * s) * w * BLK..];
                    // SAFETY: output row r of the copy belongs to this task only.
                    let d = unsafe { std::slice::from_raw_parts_mut(dp.get().add(r * ow * BLK), ow * BLK) };
                    for ox in 0..ow {
                        d[ox * BLK..(ox + 1) * BLK].copy_from_slice(&src[ox * s * BLK..ox * s * BLK + BLK]);
                    }
                }
            });
            let sub = Shape4::new(xs.n, xs.c, oh, ow);
            let v = XView { p: dst.as_ptr(), img: cb * oh * ow * BLK, cb: oh * ow * BLK, row: ow * BLK, col: BLK, ci: 1, taps: false };
            self.exec_view(simd::level(), v, sub, 1, false, oh, ow, y, residual, relu, sq, epi);
        });
    }

    /// Whether [`ConvBlk::run_nchw`] applies: fewer than 16 input channels, one group.
    pub fn takes_nchw(&self) -> bool {
        self.cpb < BLK
    }

    /// Like [`ConvBlk::run`] but reads NCHW input `x` (shape `xs`); for convolutions
    /// with fewer than 16 input channels and one group (the stem), which then read the
    /// `cin` planes directly: no channel padding, no conversion pass. Output is Blk16.
    ///
    /// # Panics
    /// When `cin ≥ 16` or groups > 1, and as [`ConvBlk::run`].
    pub fn run_nchw(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool) {
        assert!(self.cpb < BLK, "conv_blk: NCHW input only for < 16 input channels, one group");
        assert_eq!(xs.c, self.cin, "conv_blk: input channels");
        assert_eq!(Some(x.len()), xs.len(), "conv_blk: input length");
        let (h, w, c) = (xs.h, xs.w, xs.c);
        let view = XView { p: x.as_ptr(), img: c * h * w, cb: 0, row: w, col: 1, ci: h * w, taps: false };
        self.exec(view, x, xs, 1, c, y, residual, relu, None, Epi::Plain);
    }

    /// The shared driver. `x` holds per image `ppi` planes of h×w pixels of `e` floats
    /// (Blk16: ⌈c/16⌉ planes of 16-float pixels; NCHW: c planes of 1 float), `view`
    /// addresses it. When `pad > 0` the input is first copied with `pad` zero columns on
    /// the left and zeros on the right, and in two-row mode also `pad` zero rows on top
    /// and zeros below (then every kernel row is valid for every output row).
    #[allow(clippy::too_many_arguments)]
    fn exec(&self, view: XView, x: &[f32], xs: Shape4, e: usize, ppi: usize, y: &mut [f32], residual: Option<&[f32]>, relu: bool, sq: Option<&mut [f32]>, epi: Epi<'_>) {
        let (oh, ow) = self.output_hw(xs.h, xs.w).expect("conv_blk: input smaller than the kernel");
        let cob = blocks(self.cout);
        let ylen = xs.n * cob * oh * ow * BLK;
        assert_eq!(y.len(), ylen, "conv_blk: output length");
        if let Some(r) = residual {
            assert_eq!(r.len(), ylen, "conv_blk: residual length");
        }
        if let Epi::Gate(g) = epi {
            assert_eq!(g.len(), xs.n * cob * BLK, "conv_blk: gates length");
        }
        if ylen == 0 {
            return;
        }
        let level = simd::level();
        if e == BLK && self.taps_pay(level, oh, ow) {
            self.run_taps(level, x, xs, oh, ow, y, residual, relu, sq, epi);
            return;
        }
        let (s, pad) = (self.stride, self.pad);
        if pad == 0 {
            self.exec_view(level, view, xs, s, false, oh, ow, y, residual, relu, sq, epi);
            return;
        }
        let rows2 = self.rows2(level, oh, ow, e);
        let (h, w) = (xs.h, xs.w);
        // Columns (rows) the kernel may touch, in padded coordinates: 0 ..= (ow−1)·s + kw − 1.
        let wp = (pad + w).max((ow - 1) * s + self.kw);
        let (top, hp) = if rows2 { (pad, (pad + h).max((oh - 1) * s + self.kh)) } else { (0, h) };
        let planes = xs.n * ppi;
        let need = planes * hp * wp * e;
        with_scratch(&PADDED, need, |dst| {
            let rows = planes * hp;
            let dp = SyncPtr(dst.as_mut_ptr());
            const ROWS_PER_TASK: usize = 64;
            for_each_task(rows.div_ceil(ROWS_PER_TASK), need >= crate::pool::PAR_GRAIN, |t| {
                for r in t * ROWS_PER_TASK..(t * ROWS_PER_TASK + ROWS_PER_TASK).min(rows) {
                    // SAFETY: padded row r (wp·e floats at r·wp·e < need) belongs to
                    // this task only.
                    let d = unsafe { std::slice::from_raw_parts_mut(dp.get().add(r * wp * e), wp * e) };
                    let (plane, yy) = (r / hp, r % hp);
                    if yy < top || yy - top >= h {
                        d.fill(0.0);
                        continue;
                    }
                    let src = &x[((plane * h) + yy - top) * w * e..][..w * e];
                    d[..pad * e].fill(0.0);
                    d[pad * e..(pad + w) * e].copy_from_slice(src);
                    d[(pad + w) * e..].fill(0.0);
                }
            });
            let plane = hp * wp * e;
            let v = XView {
                p: dst.as_ptr(),
                img: ppi * plane,
                cb: if e == BLK { plane } else { 0 },
                row: wp * e,
                col: e,
                ci: if e == BLK { 1 } else { hp * wp },
                taps: false,
            };
            self.exec_view(level, v, xs, s, rows2, oh, ow, y, residual, relu, sq, epi);
        });
    }

    /// Whether a strided k×k layer runs on tap planes ([`ConvBlk::run_taps`]): dense,
    /// Blk16 input, not in two-row mode, and tiles over the flattened output average at
    /// least 1.4× the pixels of tiles along its rows. Each weight a tile loads then feeds
    /// that many more FMAs (these layers' weights stream from L2 per tile), against a
    /// copy 2.25× the input. Measured on AVX2 (6-pixel tiles; `AB=taps` in the
    /// `blocked_speed` example, alternated in one process, medians): 3×3/2 512→512 @14
    /// (7-wide rows, 3.5 → 5.4 pixels per tile) 0.76–0.90× the time at batch 1 and 8,
    /// 1 and 2 threads; 256→256 @28 (14-wide, 4.7 → 5.9) 1.07–1.14×, so not there.
    /// `SENET_BLK_TAPS=0` or [`set_taps`] turns it off.
    fn taps_pay(&self, level: SimdLevel, oh: usize, ow: usize) -> bool {
        if !(self.uniform && self.cpb == BLK && self.stride > 1 && self.kh * self.kw > 1 && taps_enabled()) || self.rows2(level, oh, ow, BLK) {
            return false;
        }
        let widest = |eow: usize, px: usize| kernels(level, self.tile_nb(level, false, false, eow).0, px, BLK).len();
        let avg = |n: usize, rw: usize| n as f64 / n.div_ceil(rw.max(1)).max(1) as f64;
        let p = oh * ow;
        avg(p, widest(p, BLK)) >= 1.4 * avg(ow, widest(ow, self.stride * BLK))
    }

    /// A strided k×k convolution on tap planes: for each image, input block and kernel
    /// tap (ky, kx), the input pixel each output pixel reads through that tap (zero where
    /// it falls in the padding), as one plane of oh·ow pixels. The layer then runs like
    /// a 1×1 layer on a flattened map (tiles span output rows, pixel stride 16), with
    /// every tap in the kernels' usual order (block, ky, kx, channel): the same products
    /// summed in the same order as on the padded input, plus exact zeros for taps in the
    /// top and bottom padding (which the padded path skips; an exact zero added changes
    /// no value). The copy holds kh·kw/s² times the input (9/4 for 3×3/2).
    #[allow(clippy::too_many_arguments)]
    fn run_taps(&self, level: SimdLevel, x: &[f32], xs: Shape4, oh: usize, ow: usize, y: &mut [f32], residual: Option<&[f32]>, relu: bool, sq: Option<&mut [f32]>, epi: Epi<'_>) {
        let (h, w, s, pad) = (xs.h, xs.w, self.stride, self.pad);
        let (kh, kw) = (self.kh, self.kw);
        let cb = blocks(xs.c);
        let p = oh * ow;
        let per_block = kh * kw * p * BLK;
        let planes = xs.n * cb;
        let need = planes * per_block;
        with_scratch(&PADDED, need, |dst| {
            let dp = SyncPtr(dst.as_mut_ptr());
            for_each_task(planes, need >= crate::pool::PAR_GRAIN, |t| {
                // SAFETY: the tap planes of (image, block) t (per_block floats at
                // t·per_block < need) belong to this task only.
                let d = unsafe { std::slice::from_raw_parts_mut(dp.get().add(t * per_block), per_block) };
                let src = &x[t * h * w * BLK..(t + 1) * h * w * BLK];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let plane = &mut d[(ky * kw + kx) * p * BLK..][..p * BLK];
                        // Output columns whose input column ox·s + kx − pad lies in 0..w.
                        let ox0 = pad.saturating_sub(kx).div_ceil(s).min(ow);
                        let ox1 = (w + pad).saturating_sub(kx).div_ceil(s).clamp(ox0, ow);
                        for oy in 0..oh {
                            let row = &mut plane[oy * ow * BLK..][..ow * BLK];
                            let iy = (oy * s + ky).wrapping_sub(pad);
                            if iy >= h {
                                row.fill(0.0);
                                continue;
                            }
                            row[..ox0 * BLK].fill(0.0);
                            for ox in ox0..ox1 {
                                let ix = ox * s + kx - pad;
                                row[ox * BLK..][..BLK].copy_from_slice(&src[(iy * w + ix) * BLK..][..BLK]);
                            }
                            row[ox1 * BLK..].fill(0.0);
                        }
                    }
                }
            });
            let v = XView { p: dst.as_ptr(), img: cb * per_block, cb: per_block, row: kw * p * BLK, col: p * BLK, ci: 1, taps: true };
            self.exec_view(level, v, xs, s, false, oh, ow, y, residual, relu, sq, epi);
        });
    }

    /// Whether tiles span two output rows: dense layers with short rows (≤ 8 output
    /// columns, i.e. the 7×7 maps), padded, on a level with two-row kernels. Two rows
    /// × 7 pixels × 2 blocks doubles the FMAs per weight load of a one-row 7 × 3 tile,
    /// and these layers' weights stream from L2. Costs the FMAs on padded rows (2 of 21
    /// kernel rows on a 7×7 map).
    fn rows2(&self, level: SimdLevel, oh: usize, ow: usize, e: usize) -> bool {
        self.uniform && self.pad > 0 && ow <= 8 && oh >= 2 && kernels_rows2(level, e * self.stride, self.cpb).is_some()
            && tunables().rows2
    }

    /// Rows of 16 weights per output block: (input block, ky, kx, channel).
    fn steps(&self) -> usize {
        self.nib[0] * self.kh * self.kw * self.cpb
    }

    /// Where output block ob's rows sit in a packing of tile width `n` made with
    /// `counts`: (offset of its group, blocks in the group, its index in the group);
    /// row r's 16 weights start at `offset + (r · g + b) · 16`.
    fn locate(&self, n: usize, counts: &[usize]) -> Vec<(usize, usize, usize)> {
        let cob = blocks(self.cout);
        let mut at = vec![(0usize, 1usize, 0usize); cob];
        for (ob0, g) in block_groups(cob, n, counts) {
            for b in 0..g {
                at[ob0 + b] = (self.woff[ob0], g, b);
            }
        }
        at
    }

    /// A dense 1×1/1 layer's weights as a `[cout, cin]` row-major matrix and its bias
    /// `[cout]`, read back from whichever packing it holds (exact copies of the values
    /// it was built with); None for any other layer.
    pub fn dense_matrix(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        if !self.gate_fusable() {
            return None;
        }
        let packs = self.packs.read().unwrap_or_else(|e| e.into_inner());
        let (nb, p) = packs.iter().enumerate().find_map(|(i, p)| p.as_ref().map(|p| (i, p)))?;
        let at = self.locate(nb, p.counts);
        let w = p.w.as_slice();
        let (cin, cout) = (self.cin, self.cout);
        let mut m = vec![0.0f32; cout * cin];
        for (o, row) in m.chunks_exact_mut(cin).enumerate() {
            let (base, g, b) = at[o / BLK];
            for (i, v) in row.iter_mut().enumerate() {
                // Dense 1×1: row i of every block is input channel i (ib0 = 0, k = 1).
                *v = w[base + (i * g + b) * BLK + o % BLK];
            }
        }
        Some((m, self.bias.as_slice()[..cout].to_vec()))
    }

    /// The weights packed for tiles of `nb` output blocks, grouped by
    /// `block_groups(cob, nb, counts)` (see `packs`).
    fn packed(&self, nb: usize, counts: &'static [usize]) -> Arc<Aligned> {
        if let Some(p) = &self.packs.read().unwrap_or_else(|e| e.into_inner())[nb] {
            if p.counts == counts {
                return p.w.clone();
            }
        }
        let mut packs = self.packs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = &packs[nb] {
            if p.counts == counts {
                return p.w.clone();
            }
        }
        // Derive from an existing packing, located with the counts it was made with (a
        // SIMD level switched at run time asks for other counts than the packing has).
        let (src_nb, src_counts, src) = packs
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.as_ref().map(|p| (i, p.counts, p.w.clone())))
            .expect("a ConvBlk always holds one packing");
        let steps = self.steps();
        let (from, to) = (self.locate(src_nb, src_counts), self.locate(nb, counts));
        let w = src.as_slice();
        let mut buf = Aligned::zeroed(w.len());
        let out = buf.as_mut_slice();
        for ob in 0..blocks(self.cout) {
            let ((fb, fg, fi), (tb, tg, ti)) = (from[ob], to[ob]);
            for r in 0..steps {
                out[tb + (r * tg + ti) * BLK..][..BLK].copy_from_slice(&w[fb + (r * fg + fi) * BLK..][..BLK]);
            }
        }
        let p = Arc::new(buf);
        if self.uniform {
            // Dense: drop the other packings (calls still using one hold its Arc).
            *packs = [None, None, None, None, None];
        }
        packs[nb] = Some(Packing { w: p.clone(), counts });
        p
    }

    /// Output blocks per tile (NB) for a run with these properties, and the NB values
    /// of `level` that [`block_groups`] may use (this decides the weight packing too).
    fn tile_nb(&self, level: SimdLevel, flat: bool, rows2: bool, eow: usize) -> (usize, &'static [usize]) {
        let cob = blocks(self.cout);
        let counts = block_counts(level);
        // Output blocks per tile: the widest the ISA has, unless rows are short (then
        // more blocks per tile fill the registers) or weights are block-diagonal.
        let want_nb = if !self.uniform {
            1
        } else if rows2 {
            2
        } else if let Some(nb) = tunables().nb {
            nb
        } else if flat && (self.nib[0] * self.cpb <= 64 || (cob <= 4 && self.nib[0] * self.cpb <= 256)) {
            // Short reductions (1×1 from 64 channels, or into 64): 6 px × 4 blocks
            // reuses each broadcast 4× and halves the tile groups (measured +5–14% on
            // 1×1 64→64/64→256 @56 over 14 × 2; worse for long reductions, whose
            // weights then stream from L2 every 6 pixels).
            4
        } else if self.cpb < BLK {
            // Narrow input (the stem, 3 channels): 6 px × 4 blocks, 4 FMAs per broadcast
            // (7×7/2 3→64 @224: 93 → 104 GFLOP/s on 1 thread, batch 1).
            4
        } else if eow <= 8 {
            3
        } else {
            2
        };
        let want_nb = *counts.iter().find(|&&c| c <= want_nb.max(1)).unwrap_or(&1);
        (want_nb, counts)
    }

    #[allow(clippy::too_many_arguments)]
    /// Runs the tiles on input view `v` (logical shape `xs`) with stride `s` (the layer's,
    /// or 1 on a pre-subsampled input).
    /// `rows2`: the view is padded vertically too (see [`ConvBlk::exec`]) and tiles span
    /// two output rows.
    fn exec_view(&self, level: SimdLevel, v: XView, xs: Shape4, s: usize, rows2: bool, oh: usize, ow: usize, y: &mut [f32], residual: Option<&[f32]>, relu: bool, sq: Option<&mut [f32]>, epi: Epi<'_>) {
        let cob = blocks(self.cout);
        // A 1×1/1 unpadded convolution is a product over pixels: treat each image as
        // one row of h·w pixels so that tiles never break at row ends.
        // Tap planes (`run_taps`) are flat too: every tap a plane of the output pixels.
        let flat = v.taps || (self.kh == 1 && self.kw == 1 && s == 1 && self.pad == 0);
        let (eoh, eow) = if flat { (1, oh * ow) } else { (oh, ow) };
        let (want_nb, counts) = match epi {
            Epi::Scaled { nb, counts, .. } => (nb, counts),
            _ => self.tile_nb(level, flat && !v.taps, rows2, eow),
        };
        let groups = block_groups(cob, want_nb, counts);
        let wpack_arc = self.packed(want_nb, counts);
        let wpack: &[f32] = wpack_arc.as_slice();
        // Tiles of a row: eow split evenly into pieces no wider than every group's
        // widest kernel (the same tiling for all groups, so tile-outer order works).
        let px = if v.taps {
            BLK
        } else if flat {
            view_px(&v, 1)
        } else {
            view_px(&v, s)
        };
        let mut rw_max = groups.iter().map(|&(_, nb)| kernels(level, nb, px, self.cpb).len()).min().unwrap_or(1);
        let fns2 = if rows2 { kernels_rows2(level, px, self.cpb) } else { None };
        if let Some(f) = fns2 {
            rw_max = rw_max.min(f.len());
        }
        let ntile = eow.div_ceil(rw_max);
        // Work items: (row, tile), or (row pair, tile) in two-row mode.
        let rows_per_item = if rows2 { 2 } else { 1 };
        let items = eoh.div_ceil(rows_per_item) * ntile;
        let ng = groups.len();
        let threads = crate::pool::threads_here();
        // Loop order. Output-block groups share the input, images share the weights:
        // - tile-outer when the weights stay in L2 (≤ half a core's L2,
        //   `l2_budget_floats`: weights as large as the L2 stream from L3 once per run
        //   of tiles, 1×1 512→256 @28 at batch 1 went 1.32 → 1.16 ms on 2 threads and
        //   2.34 → 2.27 on 1 when it left this order, on the 512 KiB L2 of a Zen 3) and
        //   an image's input is at least its output: per tile of pixels, every group, so
        //   the input is read from memory once and the weights from L2 (measured: 1×1
        //   256→64 and 3×3 64 at 56×56; worse for 64→256, whose many output streams then
        //   interleave);
        // - else group-outer keeps a group's weights in L2 across images but reads each
        //   image's input once per group, image-outer the reverse: pick the one that
        //   moves fewer bytes from beyond L2 (floats). The whole batch's input counts
        //   as staying in L2 only up to half of it (the group's weights and the outputs
        //   stream through the rest): 1×1 512→2048 at 7×7, batch 8 (800 KB of input)
        //   and 2048→512 at batch 2 run 5–8% faster image-outer than group-outer.
        // A thread runs consecutive tasks (`for_each_task` gives each a range), so the
        // outer index is what stays in its cache. Only speed depends on the order.
        let l2_floats = l2_budget_floats();
        let (x_all, w_all) = (xs.n * v.img, wpack.len());
        let y_img = cob * oh * ow * BLK;
        let tile_outer = ng > 1 && 2 * w_all <= l2_floats && v.img >= y_img;
        let group_outer_cost = w_all + if x_all <= l2_floats / 2 { x_all } else { ng * x_all };
        let image_outer_cost = x_all + if w_all <= l2_floats { w_all } else { xs.n * w_all };
        let image_outer = xs.n > 1 && image_outer_cost < group_outer_cost;
        let units = if tile_outer { xs.n } else { ng * xs.n };
        let chunks = (4 * threads).div_ceil(units).clamp(1, items.max(1));
        // One image whose input outgrows half of L2 and whose weights do not fit it
        // either (group-outer would read the input from L3 once per group): chunks of
        // at most half an L2 of input, each run through every group, streaming the
        // weights once per chunk, when that moves fewer floats than group-outer.
        let mem_chunks = if xs.n == 1 && !tile_outer && x_all > l2_floats / 2 && !tunables().no_mem_chunks {
            x_all.div_ceil(l2_floats / 2).min(items.max(1))
        } else {
            1
        };
        let by_memory = mem_chunks > 1 && mem_chunks * w_all + x_all < group_outer_cost;
        let chunks = if by_memory { chunks.max(mem_chunks) } else { chunks };
        let tasks = units * chunks;
        // One image cut into pixel chunks, weights that fit L2: chunk-major task order,
        // so each thread keeps its share of the input in L2 across all groups instead of
        // streaming the whole input once per group (the expanding 1×1 layers at batch 1
        // on 2 threads: 64→256 @56 and 128→512 @28, conv3 with its SE, 2.44 → 2.31 and
        // 2.87 → 2.73 ms per forward); or chunked by memory as above.
        let chunk_outer = !tile_outer && xs.n == 1 && chunks > 1 && (w_all <= l2_floats || by_memory);
        let y_ob = oh * ow * BLK;
        let yp = SyncPtr(y.as_mut_ptr());
        let rp = SyncPtr(residual.map_or(std::ptr::null(), |r| r.as_ptr()) as *mut f32);
        let gate = if let Epi::Gate(g) = epi { Some(g) } else { None };
        let gp = SyncPtr(gate.map_or(std::ptr::null(), |g| g.as_ptr()) as *mut f32);
        // Per-image weights and bias (gates folded in, `run_gated`): same packing as
        // `wpack`, one copy per image.
        let scaled = if let Epi::Scaled { w, bias, .. } = epi {
            assert!(w.len() == xs.n * wpack.len() && bias.len() == xs.n * cob * BLK, "conv_blk: scaled weights length");
            Some((w, bias))
        } else {
            None
        };
        let xp = SyncPtr(v.p as *mut f32);
        let per_block = self.kh * self.kw * self.cpb * BLK;
        // Layers with long reductions: their tile's weights (K × NB·16) outgrow L1 and
        // stream from L2 (or, for the first tile, from memory) per tile; prefetching
        // ahead hides that latency: 1×1 two input blocks (32 channels) ahead, measured
        // +15–25% on 1×1 ≥ 512 channels in; k×k one input block (k²·16 steps) ahead,
        // measured +20% on 3×3 512→512 at 7×7 and 3×3/2 at 14×14, batch 1. (The AVX2
        // assembly tiles prefetch weights for the first tile of each run only.)
        let wpf = if !(self.uniform && self.cpb == BLK && self.nib[0] * self.cpb >= PF_MIN_K) {
            0
        } else if self.kh * self.kw == 1 {
            PF_BLOCKS
        } else {
            PF_BLOCKS_KXK
        };
        let (base, extra) = (eow / ntile, eow % ntile);
        // Squeeze: one 16-lane partial sum per (image, output row, tile, output block),
        // written by the task that stores those outputs.
        let mut part = if sq.is_some() { vec![0.0f32; xs.n * eoh * ntile * cob * BLK] } else { Vec::new() };
        let pp = SyncPtr(part.as_mut_ptr());
        let want_sums = sq.is_some();
        // SE gates: on AVX2 applied by the tiles' epilogue (`Tile::gate`), elsewhere by a
        // pass over each run's outputs after the call (`gate_tile`); both round as
        // `act((acc + bias) · gate + residual)`, so the results are the same bits.
        let gate_in_tile = gate.is_some() && level == SimdLevel::Avx2;
        let gated = gate.is_some() && !gate_in_tile;
        // One tile: rows oy..oy+rh (rh = 2 only with two-row kernels), pixels of tile ti,
        // image n, output-block group gi.
        // `m` tiles ti..ti+m of one row, all of the same width (m > 1 only for one-row
        // tiles).
        let run_rows = |n: usize, gi: usize, oy: usize, ti: usize, rh: usize, m: usize| {
            let (ob0, nb) = groups[gi];
            // Even split: the first eow % ntile tiles get one extra pixel.
            let x0 = ti * base + ti.min(extra);
            let rw = base + usize::from(ti < extra);
            let (ky0, ky1) = if flat || rows2 {
                (0, self.kh) // every kernel row valid (the view holds the padding rows)
            } else {
                let top = oy * s;
                let ky0 = self.pad.saturating_sub(top).min(self.kh);
                let ky1 = (xs.h + self.pad).saturating_sub(top).min(self.kh);
                (ky0, ky1.max(ky0))
            };
            let out_off = n * y_img + ob0 * y_ob + (oy * eow + x0) * BLK;
            let xoff = if flat {
                x0 * px
            } else if rows2 {
                oy * s * v.row + x0 * s * v.col
            } else if ky1 == ky0 {
                0 // no valid kernel row (padding wider than k/2): x is never read
            } else {
                // Input row of ky0, column of the first pixel's kx = 0 (padded coords).
                (oy * s + ky0 - self.pad) * v.row + x0 * s * v.col
            };
            let tile = Tile {
                // SAFETY (pointer arithmetic): every offset stays inside its buffer: rows
                // iy = oy·s + ky − pad ∈ [0, h) for ky ∈ [ky0, ky1) (padded view: rows
                // < hp), padded columns < wp, input blocks < cb, weights of groups < cob,
                // outputs < y.len().
                x: unsafe { xp.get().add(n * v.img + self.ib0[ob0] * v.cb + xoff) },
                w: unsafe {
                    match scaled {
                        Some((sw, _)) => sw.as_ptr().add(n * wpack.len()),
                        None => wpack.as_ptr(),
                    }
                    .add(self.woff[ob0] + ky0 * self.kw * self.cpb * BLK * nb)
                },
                bias: unsafe {
                    match scaled {
                        Some((_, sb)) => sb.as_ptr().add(n * cob * BLK),
                        None => self.bias.as_slice().as_ptr(),
                    }
                    .add(ob0 * BLK)
                },
                // With a gate pass after the call, the residual and ReLU come after the
                // gate (below).
                res: if rp.get().is_null() || gated { std::ptr::null() } else { unsafe { rp.get().add(out_off) } },
                // SAFETY: the gates of image n, blocks ob0..ob0+nb lie inside the gates
                // ((n·cob + ob0 + nb)·16 ≤ gates.len(), checked in exec).
                gate: if gate_in_tile { unsafe { gp.get().add((n * cob + ob0) * BLK) } } else { std::ptr::null() },
                y: unsafe { yp.get().add(out_off) },
                ncb: self.nib[ob0],
                cpb: self.cpb,
                nky: ky1 - ky0,
                kw: self.kw,
                x_cb: v.cb,
                x_row: v.row,
                x_col: v.col,
                x_ci: v.ci,
                x_px: px,
                w_cb: per_block * nb,
                w_ky: self.kw * self.cpb * BLK * nb,
                y_ob,
                x_orow: s * v.row,
                y_orow: eow * BLK,
                relu: relu && !gated,
                pf: wpf,
                ntiles: m,
                x_tile: rw * px,
                y_tile: rw * BLK,
            };
            let f = match fns2 {
                Some(f2) if rh == 2 => f2,
                _ => kernels(level, nb, px, self.cpb),
            };
            // SAFETY: the kernel reads only inside x, w, bias, res (see above; a run's
            // tiles ti..ti+m lie in row oy, so its pixels x0..x0+m·rw stay inside the row)
            // and writes pixels x0..x0+m·rw of rows oy..oy+rh of blocks ob0..ob0+nb of
            // image n; every (image, group, item) belongs to exactly one task, so no two
            // tasks write the same output. The kernels are those of `level = simd::level()`.
            unsafe { f[rw - 1](&tile) };
            if gated {
                // The SE scale on the tiles just stored (still in L1): y = act(y · gate +
                // residual). Kept out of the microkernel, whose speed depends on its
                // exact code (an extra operand there cost 40–60% on 1×1 layers).
                for r in 0..rh {
                    let off = out_off + r * eow * BLK;
                    // SAFETY: rows oy+r, pixels x0..x0+m·rw, blocks ob0..ob0+nb of image n:
                    // this tile's outputs (see above); the residual has y's layout; the
                    // gates of image n, blocks ob0..ob0+nb lie inside the gates
                    // ((n·cob + ob0 + nb)·16 ≤ gates.len(), checked in exec).
                    unsafe {
                        gate_tile(
                            level,
                            yp.get().add(off),
                            if rp.get().is_null() { std::ptr::null() } else { rp.get().add(off) },
                            gp.get().add((n * cob + ob0) * BLK),
                            nb,
                            m * rw,
                            y_ob,
                            relu,
                        )
                    };
                }
            }
            if want_sums {
                // One partial sum per tile of the run (the same values as one call per
                // tile: the tiles' outputs are), each over its rw pixels.
                for (k, tk) in (ti..ti + m).enumerate() {
                    let xk = x0 + k * rw;
                    for r in 0..rh {
                        for b in 0..nb {
                            let ob = ob0 + b;
                            let mut acc = [0.0f32; BLK];
                            // SAFETY: the rw·16 outputs just written by tile tk of this
                            // call (row oy+r, block ob); still in L1.
                            let row = unsafe { std::slice::from_raw_parts(yp.get().add(n * y_img + ob * y_ob + ((oy + r) * eow + xk) * BLK), rw * BLK) };
                            for px in row.chunks_exact(BLK) {
                                for (a, v) in acc.iter_mut().zip(px) {
                                    *a += v;
                                }
                            }
                            // SAFETY: slot (n, oy+r, tk, ob) belongs to this tile only.
                            let slot = ((n * eoh + oy + r) * ntile + tk) * cob + ob;
                            unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), pp.get().add(slot * BLK), BLK) };
                        }
                    }
                }
            }
        };
        let run_tile = |n: usize, gi: usize, item: usize| {
            let (r, ti) = (item / ntile, item % ntile);
            if rows2 {
                let oy = 2 * r;
                if oy + 1 < eoh && groups[gi].1 == 2 {
                    run_rows(n, gi, oy, ti, 2, 1);
                } else {
                    for o in oy..(oy + 2).min(eoh) {
                        run_rows(n, gi, o, ti, 1, 1);
                    }
                }
            } else {
                run_rows(n, gi, r, ti, 1, 1);
            }
        };
        // Items start..end as runs of same-width tiles of one row, at most `cap` per run:
        // (item, tiles). Without runs (two-row tiles) one item each.
        let runs_ok = !rows2;
        let next_run = |item: usize, end: usize, cap: usize| -> usize {
            if !runs_ok {
                return 1;
            }
            let ti = item % ntile;
            // Tiles below `extra` are one pixel wider than the rest.
            let same = if ti < extra { extra } else { ntile };
            (same - ti).min(end - item).min(cap)
        };
        let flops = xs.n * cob * oh * ow * self.nib[0] * per_block;
        for_each_task(tasks, flops >= (1 << 18), |t| {
            // Even split (sizes differ by at most one item): with ceil-sized chunks, 14
            // items in 8 chunks were 7 of 2 and one empty, so one of 2 threads ran 4 and
            // the other 3 (1×1 1024→256 @14, batch 1: 1.68× on 2 threads, now 1.9×).
            let ch = if chunk_outer { t / ng } else { t % chunks };
            let range = ch * items / chunks..(ch + 1) * items / chunks;
            let (n, gi) = if chunk_outer {
                (0, t % ng)
            } else if tile_outer {
                (t / chunks, 0)
            } else if image_outer {
                (t / (chunks * ng), (t / chunks) % ng)
            } else {
                ((t / chunks) % xs.n, t / (chunks * xs.n))
            };
            // Tile-outer keeps a run's input in L1 across the groups: short runs.
            let cap = if tile_outer {
                TILE_OUTER_RUN
            } else if gated || want_sums {
                GATED_RUN
            } else {
                usize::MAX
            };
            let mut item = range.start;
            while item < range.end {
                let m = next_run(item, range.end, cap);
                let gis = if tile_outer { 0..ng } else { gi..gi + 1 };
                for gi in gis {
                    if m == 1 {
                        run_tile(n, gi, item);
                    } else {
                        run_rows(n, gi, item / ntile, item % ntile, 1, m);
                    }
                }
                item += m;
            }
        });
        if let Some(means) = sq {
            // Fixed order (row, tile) per channel, in f64: independent of the tasks. One
            // task per (image, output block) sums 16 contiguous lanes per step (the
            // compiler vectorizes it); in parallel when large, so that the pool's other
            // threads stay busy between this conv and the SE op that follows.
            let inv = 1.0 / (oh * ow) as f64;
            let (cout, rts) = (self.cout, eoh * ntile);
            let mp = SyncPtr(means.as_mut_ptr());
            for_each_task(xs.n * cob, part.len() >= crate::pool::PAR_GRAIN, |t| {
                let (n, ob) = (t / cob, t % cob);
                let mut acc = [0.0f64; BLK];
                for rt in 0..rts {
                    let src = &part[((n * rts + rt) * cob + ob) * BLK..][..BLK];
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += v as f64;
                    }
                }
                let c0 = ob * BLK;
                for (l, a) in acc.iter().enumerate().take(cout.saturating_sub(c0).min(BLK)) {
                    // SAFETY: channel c0 + l < cout of image n belongs to this task only;
                    // means has n·cout elements (checked by the caller's run_squeeze).
                    unsafe { *mp.get().add(n * cout + c0 + l) = (a * inv) as f32 };
                }
            });
        }
    }
}

/// `y = act(y · gate [+ res])` over one tile's outputs with the kernel of `level`.
///
/// # Safety
/// `level` must come from `simd::level()`; `y` (and `res` unless null) must address
/// `nb` blocks (`y_ob` floats apart) of `rw` 16-float pixels that no other thread
/// touches meanwhile, `gate` `nb`·16 floats.
#[allow(clippy::too_many_arguments)]
unsafe fn gate_tile(level: SimdLevel, y: *mut f32, res: *const f32, gate: *const f32, nb: usize, rw: usize, y_ob: usize, relu: bool) {
    #[cfg(target_arch = "x86_64")]
    #[cfg_attr(not(feature = "emulate-avx512"), target_feature(enable = "avx512f"))]
    unsafe fn avx512(y: *mut f32, res: *const f32, gate: *const f32, nb: usize, rw: usize, y_ob: usize, relu: bool) {
        gate_tile_k::<crate::vec::Avx512>(y, res, gate, nb, rw, y_ob, relu)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(y: *mut f32, res: *const f32, gate: *const f32, nb: usize, rw: usize, y_ob: usize, relu: bool) {
        gate_tile_k::<crate::vec::Avx2>(y, res, gate, nb, rw, y_ob, relu)
    }
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon(y: *mut f32, res: *const f32, gate: *const f32, nb: usize, rw: usize, y_ob: usize, relu: bool) {
        gate_tile_k::<crate::vec::Neon>(y, res, gate, nb, rw, y_ob, relu)
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => avx512(y, res, gate, nb, rw, y_ob, relu),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => avx2(y, res, gate, nb, rw, y_ob, relu),
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => neon(y, res, gate, nb, rw, y_ob, relu),
        _ => gate_tile_k::<f32>(y, res, gate, nb, rw, y_ob, relu),
    }
}

/// `y = act(y · gate [+ res])` over one tile's outputs (see [`gate_tile`]).
#[inline(always)]
unsafe fn gate_tile_k<V: Vf32>(y: *mut f32, res: *const f32, gate: *const f32, nb: usize, rw: usize, y_ob: usize, relu: bool) {
    for b in 0..nb {
        for l in (0..BLK).step_by(V::LANES) {
            let g = V::load(gate.add(b * BLK + l));
            for p in 0..rw {
                let o = b * y_ob + p * BLK + l;
                let mut v = V::load(y.add(o)).mul(g);
                if !res.is_null() {
                    v = v.add(V::load(res.add(o)));
                }
                if relu {
                    v = v.max(V::zero());
                }
                v.store(y.add(o));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("512K\n"), Some(512 << 10));
        assert_eq!(parse_cache_size("2048K"), Some(2 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("1024"), Some(1024));
        for bad in ["", "K", "0K", "-1K", "12Q", "1.5M", "99999999999999999999G"] {
            assert_eq!(parse_cache_size(bad), None, "{bad:?}");
        }
        // Whatever the host, the budget is a sane number of floats.
        let b = l2_budget_floats();
        assert!((1 << 14..=1 << 30).contains(&b), "{b}");
    }

    /// Strided k×k layers on tap planes compute bitwise what they compute on the padded
    /// input (same products in the same order; the extra top/bottom padding taps add
    /// exact zeros to accumulators that are never −0), with and without residual and
    /// ReLU, on every level; on AVX2 every case takes the tap planes (7- and 8-wide
    /// rows, 2-wide, stride 3 without padding, 5×5 padding 2, channel tails, batch 3).
    /// The squeeze means agree to rounding: their float32 partial sums are per tile,
    /// and the tiles differ (a partial sum of at most 24 pixels is off by ≤ 24·u·Σ|y|
    /// over them, so a mean by ≤ 24·u·mean|y|; checked with 32·u).
    #[test]
    fn tap_planes_compute_the_padded_paths_bits() {
        let data = |len: usize, seed: usize| -> Vec<f32> { (0..len).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) * 1e-3).collect() };
        // (n, cin, h, w, cout, k, stride, pad)
        let cases = [
            (1, 32, 13, 14, 48, 3, 2, 1),
            (3, 64, 14, 14, 32, 3, 2, 1),
            (2, 16, 16, 15, 16, 5, 2, 2),
            (1, 32, 9, 21, 16, 3, 3, 0),
            (2, 20, 5, 3, 24, 3, 2, 1),
        ];
        crate::simd::for_each_level(|level| {
            for (i, &(n, cin, h, w, cout, k, stride, pad)) in cases.iter().enumerate() {
                let conv = ConvBlk::new(&data(cout * cin * k * k, i), &data(cout, i + 10), cin, cout, k, k, stride, pad, 1);
                let (oh, ow) = conv.output_hw(h, w).unwrap();
                let xs = Shape4::new(n, cin, h, w);
                let ys = Shape4::new(n, cout, oh, ow);
                let mut x = data(blk16_len(xs), i + 20);
                // Zero padding lanes (the Blk16 invariant).
                for (j, v) in x.iter_mut().enumerate() {
                    if (j / (h * w * BLK)) % blocks(cin) * BLK + j % BLK >= cin {
                        *v = 0.0;
                    }
                }
                let r = data(blk16_len(ys), i + 30);
                if level == SimdLevel::Avx2 {
                    assert!(conv.taps_pay(level, oh, ow), "case {i} must take the tap planes on AVX2");
                }
                let what = format!("{level:?} case {i}: n={n} {cin}->{cout} {k}x{k}/{stride} pad {pad} {h}x{w}");
                for (res, relu) in [(false, false), (true, true)] {
                    let mut outs = Vec::new();
                    for taps in [false, true] {
                        set_taps(Some(taps));
                        let mut y = vec![f32::NAN; blk16_len(ys)];
                        let mut m = vec![f32::NAN; n * cout];
                        conv.run_squeeze(&x, xs, &mut y, res.then_some(&r[..]), relu, &mut m);
                        outs.push((y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), m.iter().map(|v| v.to_bits()).collect::<Vec<_>>()));
                    }
                    set_taps(None);
                    assert_eq!(outs[0].0, outs[1].0, "{what} res={res} relu={relu}: outputs");
                    let y: Vec<f32> = outs[0].0.iter().map(|&b| f32::from_bits(b)).collect();
                    for (c, (a, b)) in outs[0].1.iter().zip(&outs[1].1).enumerate() {
                        let (nn, ch) = (c / cout, c % cout);
                        let plane = &y[((nn * blocks(cout) + ch / BLK) * oh * ow) * BLK..][..oh * ow * BLK];
                        let mean_abs = plane.iter().skip(ch % BLK).step_by(BLK).map(|v| v.abs() as f64).sum::<f64>() / (oh * ow) as f64;
                        let (a, b) = (f32::from_bits(*a) as f64, f32::from_bits(*b) as f64);
                        assert!((a - b).abs() <= 32.0 * f32::EPSILON as f64 / 2.0 * mean_abs, "{what} res={res} relu={relu}: mean {c}: {a} vs {b}");
                    }
                    assert!(outs[0].0.iter().any(|&b| b != 0), "{what}: outputs all zero");
                }
            }
        });
    }
}
