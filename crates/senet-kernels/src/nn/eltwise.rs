//! Element-wise ops.

use super::{for_each_task, SyncPtr};
use crate::simd;
use crate::vec::{simd_dispatch, Vf32};

/// `y = a + b`, then `max(y, 0)` when `relu` (the `add` op): all three of one length.
///
/// # Panics
/// When the lengths differ.
pub fn add_relu(a: &[f32], b: &[f32], y: &mut [f32], relu: bool) {
    assert!(a.len() == y.len() && b.len() == y.len(), "add_relu: lengths differ");
    const CHUNK: usize = 1 << 16;
    let n = y.len();
    let tasks = n.div_ceil(CHUNK);
    let level = simd::level();
    let yp = SyncPtr(y.as_mut_ptr());
    for_each_task(tasks, n >= 2 * crate::pool::PAR_GRAIN, |t| {
        let i0 = t * CHUNK;
        let i1 = (i0 + CHUNK).min(n);
        // SAFETY: chunk i0..i1 of y belongs to task t only, and lies inside y.
        let yt = unsafe { std::slice::from_raw_parts_mut(yp.get().add(i0), i1 - i0) };
        add_relu_chunk(level, &a[i0..i1], &b[i0..i1], yt, relu);
    });
}

simd_dispatch!(fn add_relu_chunk(a: &[f32], b: &[f32], y: &mut [f32], relu: bool) => add_relu_kernel);

#[inline(always)]
unsafe fn add_relu_kernel<V: Vf32>(a: &[f32], b: &[f32], y: &mut [f32], relu: bool) {
    let n = y.len().min(a.len()).min(b.len());
    let (pa, pb, py) = (a.as_ptr(), b.as_ptr(), y.as_mut_ptr());
    #[inline(always)]
    unsafe fn step<V: Vf32>(pa: *const f32, pb: *const f32, py: *mut f32, relu: bool) {
        let s = V::load(pa).add(V::load(pb));
        if relu { s.max(V::zero()) } else { s }.store(py)
    }
    let mut i = 0;
    // SAFETY: vector steps end at or before n, the scalar tail stays below n.
    while i + V::LANES <= n {
        step::<V>(pa.add(i), pb.add(i), py.add(i), relu);
        i += V::LANES;
    }
    while i < n {
        step::<f32>(pa.add(i), pb.add(i), py.add(i), relu);
        i += 1;
    }
}
