//! ndarray front end of the SE kernels, for Rust callers holding `ndarray` tensors.
//!
//! The kernels work on contiguous slices (that is what SIMD loads and the N-API binding
//! want); these wrappers accept any standard-layout 4-D array, read its logical shape
//! from the array itself, and return owned arrays. Non-contiguous views are copied into
//! standard layout first.

use crate::se::{self, ScaleIo, SeWeights};
use crate::{Layout, Shape4};
use ndarray::{Array2, Array4, ArrayView1, ArrayView2, ArrayView4};

/// Excitation weights as ndarray views: `w1` [cr, c], `w2` [c, cr], biases optional.
pub struct SeArrays<'a> {
    pub w1: ArrayView2<'a, f32>,
    pub b1: Option<ArrayView1<'a, f32>>,
    pub w2: ArrayView2<'a, f32>,
    pub b2: Option<ArrayView1<'a, f32>>,
}

/// The array's data in standard (row-major) order, borrowed when it already is.
fn contiguous<'a>(x: &'a ArrayView4<'a, f32>) -> std::borrow::Cow<'a, [f32]> {
    match x.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().copied().collect()),
    }
}

/// Logical N, C, H, W of an array stored as `layout` ([n, c, h, w] or [n, h, w, c]).
fn shape_of(dims: &[usize], layout: Layout) -> Shape4 {
    match layout {
        Layout::Nchw => Shape4::new(dims[0], dims[1], dims[2], dims[3]),
        Layout::Nhwc => Shape4::new(dims[0], dims[3], dims[1], dims[2]),
    }
}

fn vec1(v: &Option<ArrayView1<'_, f32>>) -> Option<Vec<f32>> {
    v.as_ref().map(|b| b.iter().copied().collect())
}

/// Channel means [n, c] of `x` stored as `layout`.
pub fn squeeze(x: ArrayView4<'_, f32>, layout: Layout) -> Array2<f32> {
    let s = shape_of(x.shape(), layout);
    let mut z = vec![0.0f32; s.n * s.c];
    se::squeeze(&contiguous(&x), s, layout, &mut z);
    Array2::from_shape_vec((s.n, s.c), z).expect("n·c values")
}

/// The SE block `act(x · gates [+ residual])` on `x` stored as `layout`; returns an
/// array of x's dimensions. Errors (instead of panicking) on inconsistent weights or a
/// residual of another shape.
pub fn se_block(
    x: ArrayView4<'_, f32>,
    layout: Layout,
    w: &SeArrays<'_>,
    residual: Option<ArrayView4<'_, f32>>,
    relu: bool,
) -> Result<Array4<f32>, String> {
    let s = shape_of(x.shape(), layout);
    let (cr, c) = w.w1.dim();
    if c != s.c || w.w2.dim() != (s.c, cr) {
        return Err(format!("weights are w1 {:?}, w2 {:?}; x has {} channels", w.w1.dim(), w.w2.dim(), s.c));
    }
    if let Some(r) = &residual {
        if r.shape() != x.shape() {
            return Err(format!("residual shape {:?} differs from x {:?}", r.shape(), x.shape()));
        }
    }
    let (w1, w2): (Vec<f32>, Vec<f32>) = (w.w1.iter().copied().collect(), w.w2.iter().copied().collect());
    let (b1, b2) = (vec1(&w.b1), vec1(&w.b2));
    let wt = SeWeights::new(&w1, b1.as_deref(), &w2, b2.as_deref(), c, cr)?;
    let r = residual.as_ref().map(contiguous);
    let mut y = vec![0.0f32; x.len()];
    se::se_block(ScaleIo::Out { x: &contiguous(&x), residual: r.as_deref(), out: &mut y }, s, layout, &wt, relu);
    let d = x.dim();
    Ok(Array4::from_shape_vec(d, y).expect("same element count as x"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Axis};

    #[test]
    fn arrays_match_the_slice_kernels_in_both_layouts() {
        let x = Array4::from_shape_fn((2, 24, 5, 7), |(n, c, h, w)| ((n * 7 + c * 3 + h * 5 + w) % 11) as f32 * 0.1 - 0.4);
        let w1 = Array2::from_shape_fn((3, 24), |(i, j)| ((i + 2 * j) % 5) as f32 * 0.1 - 0.2);
        let w2 = Array2::from_shape_fn((24, 3), |(i, j)| ((3 * i + j) % 7) as f32 * 0.1 - 0.3);
        let b1 = Array1::from_elem(3, 0.05f32);
        let weights = SeArrays { w1: w1.view(), b1: Some(b1.view()), w2: w2.view(), b2: None };
        let y = se_block(x.view(), Layout::Nchw, &weights, Some(x.view()), true).unwrap();
        // Same via slices.
        let s = Shape4::new(2, 24, 5, 7);
        let xs = x.as_slice().unwrap();
        let wt = SeWeights::new(w1.as_slice().unwrap(), Some(b1.as_slice().unwrap()), w2.as_slice().unwrap(), None, 24, 3).unwrap();
        let mut want = vec![0.0f32; xs.len()];
        se::se_block(ScaleIo::Out { x: xs, residual: Some(xs), out: &mut want }, s, Layout::Nchw, &wt, true);
        assert_eq!(y.as_slice().unwrap(), &want[..]);
        // NHWC through a permuted (non-contiguous) view: same values, permuted.
        let nhwc = x.view().permuted_axes([0, 2, 3, 1]);
        let yn = se_block(nhwc, Layout::Nhwc, &weights, Some(nhwc), true).unwrap();
        assert!(yn.permuted_axes([0, 3, 1, 2]).iter().zip(y.iter()).all(|(a, b)| (a - b).abs() <= 1e-6));
        // Squeeze equals the mean over H, W.
        let z = squeeze(x.view(), Layout::Nchw);
        let m = x.mean_axis(Axis(3)).unwrap().mean_axis(Axis(2)).unwrap();
        assert!(z.iter().zip(m.iter()).all(|(a, b)| (a - b).abs() <= 1e-6));
        // Inconsistent weights are an error, not a panic.
        let bad = SeArrays { w1: w1.view(), b1: None, w2: w1.view(), b2: None };
        assert!(se_block(x.view(), Layout::Nchw, &bad, None, false).is_err());
    }
}
