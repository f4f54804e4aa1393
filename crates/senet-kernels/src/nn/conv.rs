//! [`Conv`]: the convolution the executor runs, choosing per layer between the direct
//! blocked kernel and Winograd.

use super::blocked::ConvBlk;
use super::winograd::{ConvWino, WinoTile};
use crate::Shape4;

/// A convolution on Blk16 activations (contract of [`ConvBlk::run`]), built once per
/// layer with one algorithm:
/// - 3×3, stride 1, pad 1, one group (half of an SE-ResNet's multiply-adds): Winograd
///   F(4×4,3×3) for layers of at most 128·128 channels, F(2×2,3×3) up to 512·512,
///   measured 2.0–2.4× and 1.2–1.7× faster than the direct kernel there
///   (`examples/winograd_speed.rs`); their transformed weights are 4× and 16/9× the
///   direct ones. At 512·512 (the 7×7 maps) F(2,3) is 1.27× faster at batch 8 and about
///   even at batch 1, where its 16/9× weights stream from memory (seresnet50 forward,
///   2 threads, the two layers: batch 8 15.6 → 11.6 ms, batch 1 2.36 → 2.44 ms); F(4,3)
///   would read 4× the weights (batch 1 1.6× slower). One rule for every batch size, so
///   an image's result does not depend on its batch;
/// - everything else: the direct kernel.
pub enum Conv {
    Direct(ConvBlk),
    Winograd(ConvWino),
}

impl Conv {
    /// Packs PyTorch weights `[cout, cin/groups, kh, kw]` and `bias [cout]` for the chosen
    /// algorithm (panics on inconsistent sizes, as [`ConvBlk::new`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(weight: &[f32], bias: &[f32], cin: usize, cout: usize, kh: usize, kw: usize, stride: usize, pad: usize, groups: usize) -> Conv {
        let winograd = kh == 3 && kw == 3 && stride == 1 && pad == 1 && groups == 1;
        match cin * cout {
            n if winograd && n <= 128 * 128 => Conv::Winograd(ConvWino::with_tile(weight, bias, cin, cout, WinoTile::F4)),
            n if winograd && n <= 512 * 512 => Conv::Winograd(ConvWino::with_tile(weight, bias, cin, cout, WinoTile::F2)),
            _ => Conv::Direct(ConvBlk::new(weight, bias, cin, cout, kh, kw, stride, pad, groups)),
        }
    }

    pub fn cin(&self) -> usize {
        match self {
            Conv::Direct(c) => c.cin(),
            Conv::Winograd(c) => c.cin(),
        }
    }

    pub fn cout(&self) -> usize {
        match self {
            Conv::Direct(c) => c.cout(),
            Conv::Winograd(c) => c.cout(),
        }
    }

    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        match self {
            Conv::Direct(c) => c.output_hw(h, w),
            Conv::Winograd(c) => c.output_hw(h, w),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Conv::Direct(c) => c.describe(),
            Conv::Winograd(c) => c.describe(),
        }
    }

    /// Whether [`Conv::run_nchw`] applies (the direct kernel's NCHW-input path).
    pub fn takes_nchw(&self) -> bool {
        matches!(self, Conv::Direct(c) if c.takes_nchw())
    }

    /// [`ConvBlk::run`] with the layer's algorithm.
    pub fn run(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool) {
        match self {
            Conv::Direct(c) => c.run(x, xs, y, residual, relu),
            Conv::Winograd(c) => c.run(x, xs, y, residual, relu),
        }
    }

    /// [`ConvBlk::run_squeeze`] / [`ConvWino::run_squeeze`]: the output and its channel
    /// means (summed in the direct kernel's tiles or in Winograd's output transform).
    pub fn run_squeeze(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool, means: &mut [f32]) {
        match self {
            Conv::Direct(c) => c.run_squeeze(x, xs, y, residual, relu, means),
            Conv::Winograd(c) => c.run_squeeze(x, xs, y, residual, relu, means),
        }
    }

    /// Whether the layer can take an SE block's gates in its epilogue
    /// ([`ConvBlk::gate_fusable`]: the direct kernel, dense 1×1/1).
    pub fn gate_fusable(&self) -> bool {
        matches!(self, Conv::Direct(c) if c.gate_fusable())
    }

    /// [`ConvBlk::dense_matrix`]: a dense 1×1/1 layer's `[cout, cin]` weights and
    /// bias; None for any other layer.
    pub fn dense_matrix(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        match self {
            Conv::Direct(c) => c.dense_matrix(),
            Conv::Winograd(_) => None,
        }
    }

    /// [`ConvBlk::run_gated`] (panics unless [`Conv::gate_fusable`]).
    pub fn run_gated(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool, gates: &[f32]) {
        match self {
            Conv::Direct(c) => c.run_gated(x, xs, y, residual, relu, gates),
            Conv::Winograd(_) => panic!("conv: run_gated needs a dense 1×1/1 layer"),
        }
    }

    /// [`ConvBlk::run_nchw`] (panics unless [`Conv::takes_nchw`]).
    pub fn run_nchw(&self, x: &[f32], xs: Shape4, y: &mut [f32], residual: Option<&[f32]>, relu: bool) {
        match self {
            Conv::Direct(c) => c.run_nchw(x, xs, y, residual, relu),
            Conv::Winograd(_) => panic!("conv: NCHW input only on the direct kernel's stem path"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Conv;

    /// The algorithm per layer shape (speed only; each is checked for accuracy in
    /// tests/winograd.rs and tests/blocked.rs).
    #[test]
    fn algorithm_choice() {
        let pick = |cin: usize, cout: usize, k: usize, stride: usize, pad: usize, groups: usize| {
            let w = vec![0.0f32; cout * cin / groups * k * k];
            let b = vec![0.0f32; cout];
            Conv::new(&w, &b, cin, cout, k, k, stride, pad, groups).describe()
        };
        assert!(pick(64, 64, 3, 1, 1, 1).contains("wino-F(4,3)"));
        assert!(pick(128, 128, 3, 1, 1, 1).contains("wino-F(4,3)"));
        assert!(pick(256, 256, 3, 1, 1, 1).contains("wino-F(2,3)"));
        assert!(pick(512, 512, 3, 1, 1, 1).contains("wino-F(2,3)"));
        for (cin, cout, k, stride, pad, groups) in [(1024, 1024, 3, 1, 1, 1), (512, 512, 3, 2, 1, 1), (128, 128, 3, 1, 1, 32), (256, 64, 1, 1, 0, 1)] {
            assert!(!pick(cin, cout, k, stride, pad, groups).contains("wino"), "{cin}->{cout} {k}x{k}/{stride} g{groups}");
        }
    }
}
