//! [`Conv2d`]: weights prepacked once, run many times.

use super::gemm::{self, tile_shape, Call, Geom};
use super::grouped;
use crate::simd::{self, SimdLevel};
use crate::Shape4;
use std::sync::OnceLock;

/// A 2-D convolution with folded-BatchNorm bias, optional residual and optional ReLU:
/// `y = act(conv(x, weight) + bias [+ residual])`, NCHW float32 (the `conv` op of
/// `lib/model/program.ts`).
///
/// Built once per layer. Dense convolutions (groups = 1) copy the weights into the GEMM
/// microkernel's panel order for the current SIMD level (other levels' packings are
/// derived on first use, which only happens when the level is changed at runtime, e.g.
/// in tests). Grouped convolutions keep them in PyTorch order for the direct kernel.
pub struct Conv2d {
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    bias: Vec<f32>,
    /// Dense convolutions: packed weights per SIMD level (index `level as usize - 1`),
    /// see `gemm.rs`. Grouped ones: empty (see `direct`).
    packed: [OnceLock<Vec<f32>>; 4],
    /// Grouped convolutions (computed directly, see `grouped.rs`): the weights in
    /// PyTorch order. Empty for dense ones.
    direct: Vec<f32>,
}

impl Conv2d {
    /// Packs `weight` [cout, cin/groups, kh, kw] (PyTorch order) and copies `bias` [cout].
    ///
    /// # Panics
    /// When the hyper-parameters are inconsistent: a zero size, stride or group count,
    /// `cin` or `cout` not divisible by `groups`, or a buffer of the wrong length. The
    /// binding validates all of these first; a panic here means a bug upstream.
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
    ) -> Conv2d {
        assert!(cin > 0 && cout > 0 && kh > 0 && kw > 0 && stride > 0 && groups > 0, "conv2d: zero size");
        assert!(cin.is_multiple_of(groups) && cout.is_multiple_of(groups), "conv2d: channels not divisible by groups");
        assert_eq!(weight.len(), cout * (cin / groups) * kh * kw, "conv2d: weight length");
        assert_eq!(bias.len(), cout, "conv2d: bias length");
        let conv = Conv2d {
            cin,
            cout,
            kh,
            kw,
            stride,
            pad,
            groups,
            bias: bias.to_vec(),
            packed: Default::default(),
            direct: if groups > 1 { weight.to_vec() } else { Vec::new() },
        };
        if groups == 1 {
            let level = simd::level();
            let _ = conv.packed[level as usize - 1].set(conv.pack(level, |m, k| weight[m * conv.k_g() + k]));
        }
        conv
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
        format!("{}x{}/{} p{} g{}", self.kh, self.kw, self.stride, self.pad, self.groups)
    }

    /// Output height and width for an h×w input:
    /// `floor((h + 2·pad − kh) / stride) + 1` (likewise w); None when the padded input
    /// is smaller than the kernel.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let oh = (h + 2 * self.pad).checked_sub(self.kh)? / self.stride + 1;
        let ow = (w + 2 * self.pad).checked_sub(self.kw)? / self.stride + 1;
        Some((oh, ow))
    }

    fn k_g(&self) -> usize {
        (self.cin / self.groups) * self.kh * self.kw
    }

    /// Packs the weights given as `wt(output channel, k within the group's K)` for the
    /// tile of `level`: per group, per MR-row panel (zero padded), `[K][MR]`.
    fn pack(&self, level: SimdLevel, wt: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let (mr, _) = tile_shape(level);
        let (mg, kg) = (self.cout / self.groups, self.k_g());
        let panels = mg.div_ceil(mr);
        let mut a = vec![0.0f32; self.groups * panels * kg * mr];
        for g in 0..self.groups {
            for p in 0..panels {
                let base = (g * panels + p) * kg * mr;
                for r in 0..mr.min(mg - p * mr) {
                    let m = g * mg + p * mr + r;
                    for k in 0..kg {
                        a[base + k * mr + r] = wt(m, k);
                    }
                }
            }
        }
        a
    }

    /// The packing for `level`, derived from an existing one on first use.
    fn packed_for(&self, level: SimdLevel) -> &[f32] {
        self.packed[level as usize - 1].get_or_init(|| {
            let (src_level, src) = ALL_LEVELS
                .iter()
                .find_map(|&l| self.packed[l as usize - 1].get().map(|p| (l, p)))
                .expect("Conv2d always holds one packing");
            let (mr, _) = tile_shape(src_level);
            let (mg, kg) = (self.cout / self.groups, self.k_g());
            let panels = mg.div_ceil(mr);
            self.pack(level, |m, k| {
                let (g, mi) = (m / mg, m % mg);
                src[((g * panels + mi / mr) * kg + k) * mr + mi % mr]
            })
        })
    }

    /// Runs the convolution on `x` of shape `xs` (NCHW, `xs.c == cin`) into `y`
    /// [n, cout, oh, ow] (see [`Conv2d::output_hw`]). `residual`, when given, has y's
    /// shape and is added before the ReLU. Every element of `y` is written; `y` is not
    /// read. Work runs on the senet pool; the result is bitwise the same for any thread
    /// count.
    ///
    /// # Panics
    /// When `xs.c != cin`, the output size is empty/undefined, or a buffer length does
    /// not match its shape (the binding validates these first).
    pub fn run(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool) {
        assert_eq!(xs.c, self.cin, "conv2d: input channels");
        assert_eq!(Some(x.len()), xs.len(), "conv2d: input length");
        let (oh, ow) = self.output_hw(xs.h, xs.w).expect("conv2d: input smaller than the kernel");
        let ylen = xs.n * self.cout * oh * ow;
        assert_eq!(y.len(), ylen, "conv2d: output length");
        if let Some(r) = residual {
            assert_eq!(r.len(), ylen, "conv2d: residual length");
        }
        let level = simd::level();
        let call = Call {
            g: Geom {
                n: xs.n,
                cin: self.cin,
                h: xs.h,
                w: xs.w,
                cout: self.cout,
                kh: self.kh,
                kw: self.kw,
                stride: self.stride,
                pad: self.pad,
                groups: self.groups,
                oh,
                ow,
            },
            x: x.as_ptr(),
            y: y.as_mut_ptr(),
            res: residual.map_or(std::ptr::null(), |r| r.as_ptr()),
            relu,
            a: if self.groups > 1 { &self.direct } else { self.packed_for(level) },
            bias: &self.bias,
        };
        if self.groups > 1 {
            grouped::conv(level, &call);
        } else {
            gemm::conv(level, &call);
        }
    }
}

const ALL_LEVELS: [SimdLevel; 4] = [SimdLevel::Scalar, SimdLevel::Neon, SimdLevel::Avx2, SimdLevel::Avx512];
