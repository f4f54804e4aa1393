//! Float32 kernels for Squeeze-and-Excitation networks: SIMD with runtime dispatch,
//! multithreaded on one owned rayon pool. No N-API here; the binding crate (`src/`)
//! only validates, converts and dispatches.

mod aligned;
pub mod array;
pub mod graph;
pub mod mem;
pub mod nn;
pub mod peak;
pub mod pool;
pub mod se;
pub mod simd;
mod vec;


pub use simd::SimdLevel;

/// Memory order of a 4-D activation buffer. Shapes are always given as logical N, C, H, W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Logical N, C, H, W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape4 {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

#[allow(clippy::len_without_is_empty)] // len is checked (Option), is_empty would not be
impl Shape4 {
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Shape4 { n, c, h, w }
    }
    /// Element count, or None on overflow.
    pub fn len(&self) -> Option<usize> {
        self.n.checked_mul(self.c)?.checked_mul(self.h)?.checked_mul(self.w)
    }
    pub fn hw(&self) -> usize {
        self.h * self.w
    }
}
