//! Fully connected layer (the classifier head).

use super::{for_each_task, SyncPtr};
use crate::simd;
use crate::vec::{simd_dispatch, Vf32};

/// `y[i, o] = Σ_j x[i, j] · weight[o, j] + bias[o]` for `x` [n, cin] (any
/// [n, cin, 1, 1]), `weight` [cout, cin] (PyTorch order, used as is: each output is a
/// dot product of two contiguous rows), `bias` [cout], `y` [n, cout].
///
/// Parallel over blocks of outputs; every weight row is read once for all n inputs, four
/// inputs per pass.
///
/// # Panics
/// When a buffer length does not match `n`, `cin`, `cout`.
pub fn linear(x: &[f32], n: usize, cin: usize, weight: &[f32], bias: &[f32], cout: usize, y: &mut [f32]) {
    assert_eq!(x.len(), n * cin, "linear: input length");
    assert_eq!(weight.len(), cout * cin, "linear: weight length");
    assert_eq!(bias.len(), cout, "linear: bias length");
    assert_eq!(y.len(), n * cout, "linear: output length");
    if n == 0 || cout == 0 {
        return;
    }
    // Outputs per task: about PAR_GRAIN weights each.
    let per = (crate::pool::PAR_GRAIN / cin.max(1)).clamp(1, cout);
    let tasks = cout.div_ceil(per);
    let level = simd::level();
    let yp = SyncPtr(y.as_mut_ptr());
    for_each_task(tasks, weight.len() * n >= crate::pool::PAR_GRAIN, |t| {
        let o0 = t * per;
        let o1 = (o0 + per).min(cout);
        for o in o0..o1 {
            let wr = &weight[o * cin..(o + 1) * cin];
            // Four inputs per pass over the weight row (one weight load per 4 FMAs
            // instead of two loads per FMA), each summed in exactly `dot`'s order, so
            // an input's outputs do not depend on its batch.
            let mut i = 0;
            while i + 4 <= n {
                let d = dot4(level, &x[i * cin..(i + 4) * cin], wr);
                for (k, v) in d.iter().enumerate() {
                    // SAFETY: column o of y (elements (i+k)·cout + o) belongs to the task
                    // that owns o; i + k < n and o < cout keep it in bounds.
                    unsafe { *yp.get().add((i + k) * cout + o) = v + bias[o] };
                }
                i += 4;
            }
            for i in i..n {
                let v = dot(level, &x[i * cin..(i + 1) * cin], wr) + bias[o];
                // SAFETY: as above.
                unsafe { *yp.get().add(i * cout + o) = v };
            }
        }
    });
}

simd_dispatch!(fn dot(a: &[f32], b: &[f32]) -> f32 => dot_slices);
simd_dispatch!(fn dot4(x4: &[f32], w: &[f32]) -> [f32; 4] => dot4_slices);

/// Σ a[i]·b[i] over the shorter length: the SE excitation's dot product (four vector
/// accumulators, a fixed order: deterministic per level).
#[inline(always)]
unsafe fn dot_slices<V: Vf32>(a: &[f32], b: &[f32]) -> f32 {
    crate::se::dot_k::<V>(a.as_ptr(), b.as_ptr(), a.len().min(b.len()))
}

/// The dot products of `w` with the 4 rows of `x4`, each bit for bit what [`dot_slices`]
/// returns for that row (the SE excitation's four-row pass), one load of `w` per 4 FMAs.
#[inline(always)]
unsafe fn dot4_slices<V: Vf32>(x4: &[f32], w: &[f32]) -> [f32; 4] {
    assert_eq!(x4.len(), 4 * w.len(), "dot4: 4 rows of w's length");
    crate::se::dot4_k::<V>(w.as_ptr(), x4.as_ptr(), w.len())
}
