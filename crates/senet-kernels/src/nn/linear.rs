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
                let mut d = [0.0f32; 4];
                dot4(level, &x[i * cin..(i + 4) * cin], wr, &mut d);
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

simd_dispatch!(fn dot(a: &[f32], b: &[f32]) -> f32 => dot_kernel);
simd_dispatch!(fn dot4(a4: &[f32], b: &[f32], out: &mut [f32; 4]) => dot4_kernel);

/// `out[k] = Σ a4[k·len + i]·b[i]` (len = b.len()) for 4 rows of `a4`, each bit for bit
/// what [`dot_kernel`] returns for that row: the same accumulators, steps and reduction,
/// interleaved so that each load of `b` serves four rows.
#[inline(always)]
unsafe fn dot4_kernel<V: Vf32>(a4: &[f32], b: &[f32], out: &mut [f32; 4]) {
    let n = b.len();
    assert!(a4.len() == 4 * n, "dot4: 4 rows of b's length");
    let (pa, pb) = (a4.as_ptr(), b.as_ptr());
    let l = V::LANES;
    let mut s = [[V::zero(); 4]; 4];
    let mut i = 0;
    // SAFETY: every load is of LANES values ending at or before n (row r at r·n).
    while i + 4 * l <= n {
        for j in 0..4 {
            let w = V::load(pb.add(i + j * l));
            for (r, sr) in s.iter_mut().enumerate() {
                sr[j] = V::load(pa.add(r * n + i + j * l)).mul_add(w, sr[j]);
            }
        }
        i += 4 * l;
    }
    while i + l <= n {
        let w = V::load(pb.add(i));
        for (r, sr) in s.iter_mut().enumerate() {
            sr[0] = V::load(pa.add(r * n + i)).mul_add(w, sr[0]);
        }
        i += l;
    }
    for (r, sr) in s.iter().enumerate() {
        let mut total = sr[0].add(sr[1]).add(sr[2].add(sr[3])).reduce_add();
        for k in i..n {
            total += *pa.add(r * n + k) * *pb.add(k);
        }
        out[r] = total;
    }
}

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
