//! Native layers of a forward pass (the ops of `lib/model/program.ts`), float32.
//!
//! - [`blocked`]: the channel-blocked (nChw16c) layout the executor runs the trunk in,
//!   its direct convolution [`blocked::ConvBlk`] (weights prepacked once; bias, residual
//!   and ReLU applied while the output tile is in registers), pooling, add and SE ops.
//! - [`winograd`]: Winograd F(2×2,3×3) / F(4×4,3×3) for 3×3 stride-1 layers, same contract.
//! - [`Conv`]: the per-layer choice between the two.
//! - NCHW / plain ops: [`max_pool2d`], [`global_avg_pool`], [`linear`], [`add_relu`].
//!
//! Every op runs on the crate's one rayon pool ([`crate::pool`]) with the SIMD level of
//! [`crate::simd::level`], and is deterministic: each output element is computed by one
//! task in an order that does not depend on how the work is split, so results are
//! bitwise identical for any thread count.

pub mod blocked;
mod conv;
pub mod winograd;
mod eltwise;
mod linear;
mod pool2d;

pub use conv::Conv;
pub use eltwise::add_relu;
pub use linear::linear;
pub use pool2d::{global_avg_pool, max_pool2d, pool_output_size};

/// A raw pointer that may be shared between the tasks of one parallel loop. Each use
/// site states (in a `// SAFETY:` comment) why the regions the tasks touch are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
impl<T> SyncPtr<T> {
    /// The address. (A method, so that closures capture the whole `Sync` wrapper rather
    /// than its raw-pointer field.)
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: the wrapper only carries the address; every dereference is justified at its
// use site (disjoint writes per task, reads of data nobody writes meanwhile).
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

/// Runs `f(i)` for `i` in `0..tasks`: on the senet pool when `parallel`, else inline.
/// The result never depends on the choice, only the speed does.
pub(crate) fn for_each_task(tasks: usize, parallel: bool, f: impl Fn(usize) + Sync + Send) {
    if !parallel || tasks <= 1 || crate::pool::threads_here() <= 1 {
        (0..tasks).for_each(f);
    } else {
        use rayon::prelude::*;
        crate::pool::install(|| (0..tasks).into_par_iter().for_each(f));
    }
}
