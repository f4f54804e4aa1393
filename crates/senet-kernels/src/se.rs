//! Squeeze-and-Excitation kernels: `squeeze` (global average pool per channel), `excite`
//! (FC → ReLU → FC → sigmoid), `scale` (per-channel gate, optionally fused with a residual
//! add and ReLU) and `se_block` (all three, two passes over the activation).
//!
//! Determinism: every output element is computed by one routine whose summation order
//! depends only on the shape, never on how the work is split across threads, so results
//! are bitwise identical for any thread count.

use crate::pool::{self, PAR_GRAIN};
use crate::simd::{self, SimdLevel};
use crate::vec::{simd_dispatch, stream_fence, Vf32};
use crate::{Layout, Shape4};
use crate::nn::for_each_task;

/// Excitation weights in PyTorch layout: `w1` [cr, c], `w2` [c, cr], `b1` [cr], `b2` [c].
#[derive(Clone, Copy, Debug)]
pub struct SeWeights<'a> {
    pub w1: &'a [f32],
    pub b1: Option<&'a [f32]>,
    pub w2: &'a [f32],
    pub b2: Option<&'a [f32]>,
    pub c: usize,
    pub cr: usize,
}

impl<'a> SeWeights<'a> {
    /// Checks every length against `c` and `cr`.
    pub fn new(
        w1: &'a [f32],
        b1: Option<&'a [f32]>,
        w2: &'a [f32],
        b2: Option<&'a [f32]>,
        c: usize,
        cr: usize,
    ) -> Result<Self, String> {
        let want = c.checked_mul(cr).ok_or("c·cr overflows")?;
        if c == 0 || cr == 0 {
            return Err(format!("c and cr must be positive, got c={c}, cr={cr}"));
        }
        if w1.len() != want {
            return Err(format!("w1 length must be cr·c = {want}, got {}", w1.len()));
        }
        if w2.len() != want {
            return Err(format!("w2 length must be c·cr = {want}, got {}", w2.len()));
        }
        if let Some(b) = b1 {
            if b.len() != cr {
                return Err(format!("b1 length must be cr = {cr}, got {}", b.len()));
            }
        }
        if let Some(b) = b2 {
            if b.len() != c {
                return Err(format!("b2 length must be c = {c}, got {}", b.len()));
            }
        }
        Ok(SeWeights { w1, b1, w2, b2, c, cr })
    }
}

/// Where `scale` reads and writes. In-place forms exist because JS callers may pass the
/// same buffer as `x` (or `residual`) and `out`; each output element is computed from the
/// inputs at the same index only, so exact aliasing is safe.
pub enum ScaleIo<'a> {
    /// `out = f(x, residual)`; `out` must not overlap the inputs.
    Out { x: &'a [f32], residual: Option<&'a [f32]>, out: &'a mut [f32] },
    /// `x = f(x, residual)`.
    InPlace { xy: &'a mut [f32], residual: Option<&'a [f32]> },
    /// `residual = f(x, residual)`.
    IntoResidual { x: &'a [f32], ry: &'a mut [f32] },
}

/// Raw view of a [`ScaleIo`] that can be shared by the tasks of a parallel loop.
#[derive(Clone, Copy)]
struct Ptrs {
    x: *const f32,
    r: *const f32, // null when there is no residual
    y: *mut f32,
    len: usize,
}
// SAFETY: the pointers come from slices that outlive the parallel region (it ends before
// the borrowing `ScaleIo` does), and the tasks write disjoint index ranges of `y`.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

impl Ptrs {
    /// The sub-range `off .. off + len` of every buffer.
    fn window(self, off: usize, len: usize) -> Ptrs {
        assert!(off + len <= self.len, "window out of range");
        // SAFETY: in bounds of each buffer (all have `self.len` elements).
        unsafe {
            Ptrs {
                x: self.x.add(off),
                r: if self.r.is_null() { self.r } else { self.r.add(off) },
                y: self.y.add(off),
                len,
            }
        }
    }
}

impl ScaleIo<'_> {
    fn ptrs(&mut self) -> Ptrs {
        match self {
            ScaleIo::Out { x, residual, out } => {
                assert_eq!(x.len(), out.len(), "out length");
                if let Some(r) = residual {
                    assert_eq!(r.len(), x.len(), "residual length");
                }
                Ptrs {
                    x: x.as_ptr(),
                    r: residual.map_or(std::ptr::null(), |r| r.as_ptr()),
                    y: out.as_mut_ptr(),
                    len: x.len(),
                }
            }
            ScaleIo::InPlace { xy, residual } => {
                if let Some(r) = residual {
                    assert_eq!(r.len(), xy.len(), "residual length");
                }
                Ptrs {
                    x: xy.as_ptr(),
                    r: residual.map_or(std::ptr::null(), |r| r.as_ptr()),
                    y: xy.as_mut_ptr(),
                    len: xy.len(),
                }
            }
            ScaleIo::IntoResidual { x, ry } => {
                assert_eq!(x.len(), ry.len(), "residual length");
                Ptrs { x: x.as_ptr(), r: ry.as_ptr(), y: ry.as_mut_ptr(), len: x.len() }
            }
        }
    }

    /// The input `x` as a slice (for the squeeze of `se_block`, before anything is written).
    fn x(&self) -> &[f32] {
        match self {
            ScaleIo::Out { x, .. } | ScaleIo::IntoResidual { x, .. } => x,
            ScaleIo::InPlace { xy, .. } => xy,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generic per-ISA building blocks. All are `unsafe`: callers guarantee the pointer ranges.

/// Accurate sum of `len` floats: f32 vector partial sums over blocks short enough that
/// each accumulator lane adds at most 16 values, block sums added in f64. The error is
/// thus ~16 f32 roundings per lane instead of len/LANES, whatever the plane size.
#[inline(always)]
unsafe fn sum_f64<V: Vf32>(p: *const f32, len: usize) -> f64 {
    let block = 64 * V::LANES; // 4 accumulators × 16 adds each
    let mut total = 0.0f64;
    let mut i = 0;
    while i < len {
        let end = (i + block).min(len);
        let (mut a0, mut a1, mut a2, mut a3) = (V::zero(), V::zero(), V::zero(), V::zero());
        while i + 4 * V::LANES <= end {
            a0 = a0.add(V::load(p.add(i)));
            a1 = a1.add(V::load(p.add(i + V::LANES)));
            a2 = a2.add(V::load(p.add(i + 2 * V::LANES)));
            a3 = a3.add(V::load(p.add(i + 3 * V::LANES)));
            i += 4 * V::LANES;
        }
        while i + V::LANES <= end {
            a0 = a0.add(V::load(p.add(i)));
            i += V::LANES;
        }
        let mut s = a0.add(a1).add(a2.add(a3)).reduce_add() as f64;
        while i < end {
            s += *p.add(i) as f64;
            i += 1;
        }
        total += s;
    }
    total
}

/// Means of `planes` contiguous planes of `hw` floats: `z[p] = mean(x[p·hw .. (p+1)·hw])`.
#[inline(always)]
unsafe fn squeeze_planes_k<V: Vf32>(x: &[f32], hw: usize, z: &mut [f32]) {
    debug_assert_eq!(x.len(), z.len() * hw);
    let inv = 1.0 / hw as f64;
    for (p, zp) in z.iter_mut().enumerate() {
        *zp = (sum_f64::<V>(x.as_ptr().add(p * hw), hw) * inv) as f32;
    }
}

/// Channel means for NHWC: `x` holds `rows` pixels of `stride` floats; sums columns
/// `c0 .. c0 + z.len()` into `z`. Rows are summed in f32 in groups of 16, group sums are
/// added in f64 (same accuracy argument as [`sum_f64`]).
#[inline(always)]
unsafe fn squeeze_cols_k<V: Vf32>(x: &[f32], rows: usize, stride: usize, c0: usize, z: &mut [f32]) {
    const MAXW: usize = 64;
    const GROUP: usize = 16;
    let width = z.len();
    debug_assert!(width <= MAXW && c0 + width <= stride && x.len() >= rows * stride);
    let mut acc = [0.0f64; MAXW];
    let mut tmp = [0.0f32; MAXW];
    let base = x.as_ptr().add(c0);
    let mut r = 0;
    while r < rows {
        let end = (r + GROUP).min(rows);
        let mut c = 0;
        while c + V::LANES <= width {
            let mut a = V::zero();
            for rr in r..end {
                a = a.add(V::load(base.add(rr * stride + c)));
            }
            a.store(tmp.as_mut_ptr().add(c));
            c += V::LANES;
        }
        while c < width {
            let mut a = 0.0f32;
            for rr in r..end {
                a += *base.add(rr * stride + c);
            }
            tmp[c] = a;
            c += 1;
        }
        for c in 0..width {
            acc[c] += tmp[c] as f64;
        }
        r = end;
    }
    let inv = 1.0 / rows as f64;
    for c in 0..width {
        z[c] = (acc[c] * inv) as f32;
    }
}

/// Dot product of `len` floats with 4 vector accumulators (fixed order).
#[inline(always)]
pub(crate) unsafe fn dot_k<V: Vf32>(a: *const f32, b: *const f32, len: usize) -> f32 {
    let (mut a0, mut a1, mut a2, mut a3) = (V::zero(), V::zero(), V::zero(), V::zero());
    let mut i = 0;
    while i + 4 * V::LANES <= len {
        a0 = V::load(a.add(i)).mul_add(V::load(b.add(i)), a0);
        a1 = V::load(a.add(i + V::LANES)).mul_add(V::load(b.add(i + V::LANES)), a1);
        a2 = V::load(a.add(i + 2 * V::LANES)).mul_add(V::load(b.add(i + 2 * V::LANES)), a2);
        a3 = V::load(a.add(i + 3 * V::LANES)).mul_add(V::load(b.add(i + 3 * V::LANES)), a3);
        i += 4 * V::LANES;
    }
    while i + V::LANES <= len {
        a0 = V::load(a.add(i)).mul_add(V::load(b.add(i)), a0);
        i += V::LANES;
    }
    let mut s = a0.add(a1).add(a2.add(a3)).reduce_add();
    while i < len {
        s += *a.add(i) * *b.add(i);
        i += 1;
    }
    s
}

/// Dot products of `w` with four rows of `x` (row stride `len`): per row exactly the
/// operations of [`dot_k`] in its order (four accumulators, the same combination and
/// tail), so that a sample's result does not depend on whether it went through here or
/// through `dot_k`, i.e. on the batch it came in. One load of `w` feeds four FMAs.
#[inline(always)]
pub(crate) unsafe fn dot4_k<V: Vf32>(w: *const f32, x: *const f32, len: usize) -> [f32; 4] {
    let mut acc = [[V::zero(); 4]; 4]; // [row][accumulator]
    let mut i = 0;
    while i + 4 * V::LANES <= len {
        for u in 0..4 {
            let wv = V::load(w.add(i + u * V::LANES));
            for (q, aq) in acc.iter_mut().enumerate() {
                aq[u] = wv.mul_add(V::load(x.add(q * len + i + u * V::LANES)), aq[u]);
            }
        }
        i += 4 * V::LANES;
    }
    while i + V::LANES <= len {
        let wv = V::load(w.add(i));
        for (q, aq) in acc.iter_mut().enumerate() {
            aq[0] = wv.mul_add(V::load(x.add(q * len + i)), aq[0]);
        }
        i += V::LANES;
    }
    let mut r = [0.0f32; 4];
    for (rq, aq) in r.iter_mut().zip(&acc) {
        *rq = aq[0].add(aq[1]).add(aq[2].add(aq[3])).reduce_add();
    }
    while i < len {
        let wi = *w.add(i);
        for (q, rq) in r.iter_mut().enumerate() {
            *rq += wi * *x.add(q * len + i);
        }
        i += 1;
    }
    r
}

/// One layer of the excitation for rows `j0 .. j0 + out.len()/n` of `w` ([rows, k]):
/// `out[(j - j0)·n + s] = act(dot(w[j], inp[s]) + b[j])` for samples s < n, where act is
/// ReLU (`sigmoid == false`) or sigmoid. Output is row-major by weight row so that
/// parallel tasks own contiguous output chunks; the caller transposes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fc_rows_k<V: Vf32>(
    w: &[f32],
    b: Option<&[f32]>,
    inp: &[f32],
    n: usize,
    k: usize,
    j0: usize,
    sigmoid: bool,
    out: &mut [f32],
) {
    let rows = out.len() / n;
    for jj in 0..rows {
        let j = j0 + jj;
        let wr = w.as_ptr().add(j * k);
        let bias = b.map_or(0.0, |b| b[j]);
        let mut s = 0;
        // Four samples per pass over the weight row: one load of w feeds four FMAs.
        while s + 4 <= n {
            let d = dot4_k::<V>(wr, inp.as_ptr().add(s * k), k);
            for (q, v) in d.into_iter().enumerate() {
                let v = v + bias;
                out[jj * n + s + q] = if sigmoid { v } else { v.max(0.0) };
            }
            s += 4;
        }
        while s < n {
            let v = dot_k::<V>(wr, inp.as_ptr().add(s * k), k) + bias;
            out[jj * n + s] = if sigmoid { v } else { v.max(0.0) };
            s += 1;
        }
    }
    if sigmoid {
        sigmoid_k::<V>(out);
    }
}

/// In-place logistic sigmoid.
#[inline(always)]
unsafe fn sigmoid_k<V: Vf32>(v: &mut [f32]) {
    let p = v.as_mut_ptr();
    let mut i = 0;
    while i + V::LANES <= v.len() {
        V::load(p.add(i)).sigmoid().store(p.add(i));
        i += V::LANES;
    }
    if i < v.len() {
        // The tail through the same vector code (via a zero-padded copy), so an
        // element's gate does not depend on where a task's chunk starts: the scalar
        // twin differs in the last bit (it broke bitwise equality across thread counts).
        let mut t = [0.0f32; 16]; // ≥ the widest vector (AVX-512: 16 lanes)
        debug_assert!(V::LANES <= t.len());
        let tail = v.len() - i;
        t[..tail].copy_from_slice(&v[i..]);
        V::load(t.as_ptr()).sigmoid().store(t.as_mut_ptr());
        v[i..].copy_from_slice(&t[..tail]);
    }
}

/// `y[i] = act(x[i]·g [+ r[i]])` for i in `off .. off + len` (one NCHW plane, one gate).
#[inline(always)]
#[allow(clippy::int_plus_one)] // `i + $step <= end` reads as intended for step 1 too
unsafe fn scale_plane_k<V: Vf32>(p: Ptrs, off: usize, len: usize, g: f32, relu: bool, stream: bool) {
    let (x, r, y) = (p.x.add(off), p.r, p.y.add(off));
    let gv = V::splat(g);
    let zero = V::zero();
    let mut i = 0;
    macro_rules! body {
        ($V:ty, $step:expr, $end:expr, $gv:expr, $zero:expr, $store:ident) => {
            while i + $step <= $end {
                let mut v = <$V>::load(x.add(i)).mul($gv);
                if !r.is_null() {
                    v = v.add(<$V>::load(r.add(off + i)));
                }
                if relu {
                    v = v.max($zero);
                }
                v.$store(y.add(i));
                i += $step;
            }
        };
    }
    if stream {
        // Scalar up to the first vector-aligned output, then non-temporal stores.
        let align = 4 * V::LANES;
        let head = ((align - (y as usize) % align) % align / 4).min(len);
        body!(f32, 1, head, g, 0.0f32, store);
        body!(V, V::LANES, len, gv, zero, store_stream);
    } else {
        body!(V, V::LANES, len, gv, zero, store);
    }
    body!(f32, 1, len, g, 0.0f32, store);
}

/// `y[i] = act(x[i]·g[i mod c] [+ r[i]])` over `pixels` NHWC rows of `c` floats starting
/// at element `off`; `g` points at this sample's `c` gates.
#[inline(always)]
#[allow(clippy::int_plus_one)] // as in scale_plane_k
unsafe fn scale_rows_k<V: Vf32>(p: Ptrs, off: usize, pixels: usize, c: usize, g: *const f32, relu: bool) {
    let zero = V::zero();
    for px in 0..pixels {
        let o = off + px * c;
        let (x, y) = (p.x.add(o), p.y.add(o));
        let mut i = 0;
        macro_rules! body {
            ($V:ty, $step:expr, $zero:expr) => {
                while i + $step <= c {
                    let mut v = <$V>::load(x.add(i)).mul(<$V>::load(g.add(i)));
                    if !p.r.is_null() {
                        v = v.add(<$V>::load(p.r.add(o + i)));
                    }
                    if relu {
                        v = v.max($zero);
                    }
                    v.store(y.add(i));
                    i += $step;
                }
            };
        }
        body!(V, V::LANES, zero);
        body!(f32, 1, 0.0f32);
    }
}

simd_dispatch!(fn squeeze_planes(x: &[f32], hw: usize, z: &mut [f32]) => squeeze_planes_k);
simd_dispatch!(fn squeeze_cols(x: &[f32], rows: usize, stride: usize, c0: usize, z: &mut [f32]) => squeeze_cols_k);
simd_dispatch!(fn fc_rows(w: &[f32], b: Option<&[f32]>, inp: &[f32], n: usize, k: usize, j0: usize, sigmoid: bool, out: &mut [f32]) => fc_rows_k);
simd_dispatch!(fn scale_plane(p: Ptrs, off: usize, len: usize, g: f32, relu: bool, stream: bool) => scale_plane_k);
simd_dispatch!(fn scale_rows(p: Ptrs, off: usize, pixels: usize, c: usize, g: *const f32, relu: bool) => scale_rows_k);

// ---------------------------------------------------------------------------------------
// Public kernels.

/// Number of parallel tasks for `work` elements, at most `items`.
fn tasks_for(work: usize, items: usize) -> usize {
    if work < 2 * PAR_GRAIN || pool::is_serial() {
        1
    } else {
        (work / PAR_GRAIN).min(items).clamp(1, 4 * pool::num_threads().max(1))
    }
}

/// NHWC channel-block width: the squeeze accumulates this many channels per task.
const COL_BLOCK: usize = 64;

/// `z[n·c + ch] = mean over h×w of x[n, ch]`. `x.len()` must be the shape's length and
/// `z.len()` must be n·c (panics otherwise; the binding validates first).
pub fn squeeze(x: &[f32], s: Shape4, layout: Layout, z: &mut [f32]) {
    let len = s.len().expect("shape overflows");
    assert_eq!(x.len(), len, "x length");
    assert_eq!(z.len(), s.n * s.c, "z length");
    let level = simd::level();
    pool::install(|| squeeze_in(level, x, s, layout, z));
}

fn squeeze_in(level: SimdLevel, x: &[f32], s: Shape4, layout: Layout, z: &mut [f32]) {
    let hw = s.hw();
    if layout == Layout::Nchw && hw > 1 {
        let planes = s.n * s.c;
        let tasks = tasks_for(x.len(), planes);
        let per = planes.div_ceil(tasks);
        let zp = SendPtr(z.as_mut_ptr());
        for_each_task(planes.div_ceil(per), true, |t| {
            let p0 = t * per;
            let n = per.min(planes - p0);
            // SAFETY: task t owns z[p0 .. p0 + n], disjoint across tasks.
            let zc = unsafe { std::slice::from_raw_parts_mut(zp.get().add(p0), n) };
            squeeze_planes(level, &x[p0 * hw..(p0 + n) * hw], hw, zc);
        });
    } else {
        // NHWC (and NCHW with 1×1 planes, which is the same memory order): each task sums
        // one block of ≤ 64 channels of one sample over all pixels.
        let blocks = s.c.div_ceil(COL_BLOCK);
        let sample = hw * s.c;
        let work: Vec<(usize, usize)> =
            (0..s.n).flat_map(|n| (0..blocks).map(move |b| (n, b))).collect();
        let z_ptr = SendPtr(z.as_mut_ptr());
        let run = |&(n, b): &(usize, usize)| {
            let c0 = b * COL_BLOCK;
            let w = COL_BLOCK.min(s.c - c0);
            // SAFETY: each (n, b) owns z[n·c + c0 .. + w], disjoint across tasks.
            let zc = unsafe { std::slice::from_raw_parts_mut(z_ptr.get().add(n * s.c + c0), w) };
            squeeze_cols(level, &x[n * sample..(n + 1) * sample], hw, s.c, c0, zc);
        };
        for_each_task(work.len(), tasks_for(x.len(), work.len()) > 1, |i| run(&work[i]));
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: used only to hand disjoint sub-ranges of one output buffer to parallel tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `gates[s·c + i] = sigmoid(w2[i] · relu(w1 · z[s] + b1) + b2[i])` for samples s < n.
/// `z.len()` and `gates.len()` must be n·c.
pub fn excite(z: &[f32], n: usize, w: &SeWeights, gates: &mut [f32]) {
    assert_eq!(z.len(), n * w.c, "z length");
    assert_eq!(gates.len(), n * w.c, "gates length");
    let level = simd::level();
    pool::install(|| excite_in(level, z, n, w.c, w, gates));
}

/// One FC layer for all samples: returns [rows, n] (row-major by weight row).
#[allow(clippy::too_many_arguments)]
fn fc_layer(
    level: SimdLevel,
    wt: &[f32],
    b: Option<&[f32]>,
    inp: &[f32],
    n: usize,
    k: usize,
    rows: usize,
    sigmoid: bool,
) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * n];
    // Work: the weights read once (at batch 1 that dominates: 1024→64 streams 256 KiB,
    // which two threads fetch faster than one) plus the multiply-adds, 4 per element.
    let tasks = tasks_for(rows * k + rows * n * k / 4, rows);
    if tasks <= 1 {
        fc_rows(level, wt, b, inp, n, k, 0, sigmoid, &mut out);
    } else {
        let per = rows.div_ceil(tasks);
        let op = SendPtr(out.as_mut_ptr());
        for_each_task(rows.div_ceil(per), true, |t| {
            let r = per.min(rows - t * per);
            // SAFETY: task t owns rows t·per .. t·per + r of out, disjoint across tasks.
            let oc = unsafe { std::slice::from_raw_parts_mut(op.get().add(t * per * n), r * n) };
            fc_rows(level, wt, b, inp, n, k, t * per, sigmoid, oc);
        });
    }
    out
}

/// [`excite`] with a first layer of another input width: `gates[s·c + i] =
/// sigmoid(w2[i] · relu(w1 · z[s] + b1) + b2[i])` with `w1` `[cr, k]`, `b1` `[cr]` and
/// `z` `[n, k]`; `w` supplies the second layer (its own `w1`, `b1` are not read). With
/// an SE block's first layer folded into the convolution before it (`w1 · W`,
/// `w1 · bias + b1`), `z` holds the means of that convolution's input.
///
/// # Panics
/// On a length mismatch.
#[allow(clippy::too_many_arguments)]
pub fn excite_k(z: &[f32], n: usize, k: usize, w1: &[f32], b1: Option<&[f32]>, w: &SeWeights, gates: &mut [f32]) {
    assert_eq!(w1.len(), w.cr * k, "w1 length");
    assert!(b1.is_none_or(|b| b.len() == w.cr), "b1 length");
    assert_eq!(z.len(), n * k, "z length");
    assert_eq!(gates.len(), n * w.c, "gates length");
    let level = simd::level();
    let folded = SeWeights { w1, b1, ..*w };
    pool::install(|| excite_in(level, z, n, k, &folded, gates));
}

/// FC1 (`w.w1` `[cr, k]`) → ReLU → FC2 → sigmoid for `n` samples of `z` `[n, k]`.
fn excite_in(level: SimdLevel, z: &[f32], n: usize, k: usize, w: &SeWeights, gates: &mut [f32]) {
    let (c, cr) = (w.c, w.cr);
    // hidden is [cr, n]; the second layer needs it per sample: transpose to [n, cr].
    let h = fc_layer(level, w.w1, w.b1, z, n, k, cr, false);
    let mut ht = vec![0.0f32; n * cr];
    for j in 0..cr {
        for s in 0..n {
            ht[s * cr + j] = h[j * n + s];
        }
    }
    let g = fc_layer(level, w.w2, w.b2, &ht, n, cr, c, true);
    for i in 0..c {
        for s in 0..n {
            gates[s * c + i] = g[i * n + s];
        }
    }
}

/// `y = act(x · gates[n, c] [+ residual])`, gates broadcast over h×w.
pub fn scale(mut io: ScaleIo, s: Shape4, layout: Layout, gates: &[f32], relu: bool) {
    let p = io.ptrs();
    assert_eq!(p.len, s.len().expect("shape overflows"), "x length");
    assert_eq!(gates.len(), s.n * s.c, "gates length");
    let level = simd::level();
    pool::install(|| scale_in(level, p, s, layout, gates, relu, streams(p.len)));
}

/// Outputs of at least this many bytes are written with non-temporal stores (NCHW):
/// they cannot stay in the cache anyway, and streaming skips the read-for-ownership
/// of every output line, a third of the scale pass's memory traffic.
const STREAM_MIN_BYTES: usize = 16 << 20;

fn streams(len: usize) -> bool {
    len * std::mem::size_of::<f32>() >= STREAM_MIN_BYTES
}

fn scale_in(level: SimdLevel, p: Ptrs, s: Shape4, layout: Layout, gates: &[f32], relu: bool, stream: bool) {
    let hw = s.hw();
    if layout == Layout::Nchw && hw > 1 {
        let planes = s.n * s.c;
        let tasks = tasks_for(p.len, planes);
        let per = planes.div_ceil(tasks);
        let run = |t: usize| {
            for (pl, &g) in gates.iter().enumerate().take(((t + 1) * per).min(planes)).skip(t * per) {
                scale_plane(level, p, pl * hw, hw, g, relu, stream);
            }
            if stream {
                stream_fence();
            }
        };
        for_each_task(tasks, true, run);
    } else {
        let pixels = s.n * hw;
        let tasks = tasks_for(p.len, pixels);
        let per = pixels.div_ceil(tasks);
        let run = |t: usize| {
            let (a, b) = (t * per, ((t + 1) * per).min(pixels));
            let mut px = a;
            while px < b {
                // Rows of one sample share its gates.
                let n = px / hw;
                let end = b.min((n + 1) * hw);
                scale_rows(level, p, px * s.c, end - px, s.c, gates[n * s.c..].as_ptr(), relu);
                px = end;
            }
        };
        for_each_task(tasks, true, run);
    }
}

/// Squeeze, excite and scale in two passes over `x`: one read for the channel means, one
/// read (+ residual read) and write for the output. In-place forms are safe: a sample's
/// squeeze finishes before anything of that sample is written.
///
/// Large samples are processed sample-major: each sample is squeezed, excited and scaled
/// before the next, so its second pass reads it back from cache (a sample of [8,256,56,56] is
/// 3.2 MB: it fits the L3, the whole tensor may not) and DRAM sees about one read and
/// one write, like a copy. Samples run in parallel, and so do the planes inside one
/// sample, so that N = 1 or N not a multiple of the thread count still keeps every
/// thread busy. The schedule depends on the shape only, never on the thread count.
pub fn se_block(mut io: ScaleIo, s: Shape4, layout: Layout, w: &SeWeights, relu: bool) {
    assert_eq!(s.c, w.c, "weights' channel count");
    let len = s.len().expect("shape overflows");
    assert_eq!(io.x().len(), len, "x length");
    let level = simd::level();
    let p = io.ptrs();
    let sample = len / s.n;
    let one = Shape4::new(1, s.c, s.h, s.w);
    let stream = streams(len);
    let run = |i: usize| {
        let mut z = vec![0.0f32; s.c];
        let mut g = vec![0.0f32; s.c];
        let pi = p.window(i * sample, sample);
        // SAFETY: sample i's slice of x is only read here, before this task writes sample
        // i's output (the only region of y it may alias, in the in-place forms); other
        // tasks write other samples' outputs.
        let xi = unsafe { std::slice::from_raw_parts(pi.x, sample) };
        squeeze_in(level, xi, one, layout, &mut z);
        excite_in(level, &z, 1, w.c, w, &mut g);
        scale_in(level, pi, one, layout, &g, relu, stream);
    };
    pool::install(|| {
        if sample < SAMPLE_MAJOR_MIN {
            // Small samples: the whole tensor stays in cache anyway, and the excitation
            // (whose weights can outweigh a 7×7 sample) is better batched over samples.
            let mut z = vec![0.0f32; s.n * s.c];
            let mut g = vec![0.0f32; s.n * s.c];
            // SAFETY: x is only read here, before anything is written.
            let x = unsafe { std::slice::from_raw_parts(p.x, len) };
            squeeze_in(level, x, s, layout, &mut z);
            excite_in(level, &z, s.n, w.c, w, &mut g);
            scale_in(level, p, s, layout, &g, relu, stream);
        } else {
            for_each_task(s.n, true, run);
        }
    });
}

/// Per-sample element count from which `se_block` goes sample-major (1 MiB of f32):
/// below it the phases run over the whole batch.
const SAMPLE_MAJOR_MIN: usize = 1 << 18;
