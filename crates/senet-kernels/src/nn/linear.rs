//! Fully connected layer (the classifier head).

use super::{for_each_task, SyncPtr};
use crate::simd;
use crate::vec::{simd_dispatch, Vf32};

/// `y[i, o] = Σ_j x[i, j] · weight[o, j] + bias[o]` for `x` [n, cin] (any
/// [n, cin, 1, 1]), `weight` [cout, cin] (PyTorch order, used as is: each output is a
/// dot product of two contiguous rows), `bias` [cout], `y` [n, cout].
///
/// Parallel over blocks of outputs; every weight row is read once for all n inputs.
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
            for i in 0..n {
                let v = dot(level, &x[i * cin..(i + 1) * cin], wr) + bias[o];
                // SAFETY: column o of y (elements i·cout + o) belongs to the task that
                // owns o; i < n and o < cout keep it in bounds.
                unsafe { *yp.get().add(i * cout + o) = v };
            }
        }
    });
}

simd_dispatch!(fn dot(a: &[f32], b: &[f32]) -> f32 => dot_kernel);

/// Σ a[i]·b[i] with four vector accumulators (a fixed order: deterministic per level).
#[inline(always)]
unsafe fn dot_kernel<V: Vf32>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let l = V::LANES;
    let mut s = [V::zero(); 4];
    let mut i = 0;
    // SAFETY: every load is of LANES values ending at or before n.
    while i + 4 * l <= n {
        for (j, acc) in s.iter_mut().enumerate() {
            *acc = V::load(pa.add(i + j * l)).mul_add(V::load(pb.add(i + j * l)), *acc);
        }
        i += 4 * l;
    }
    while i + l <= n {
        s[0] = V::load(pa.add(i)).mul_add(V::load(pb.add(i)), s[0]);
        i += l;
    }
    let mut total = s[0].add(s[1]).add(s[2].add(s[3])).reduce_add();
    while i < n {
        total += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    total
}
