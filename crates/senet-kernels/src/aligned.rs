//! A zeroed float buffer whose first element is 64-byte aligned.
//!
//! One cache line per zmm load or store: `Vec<f32>` only promises 4 bytes, and glibc's
//! large blocks start 16 bytes past a page boundary, which made every packed-weight load
//! of the convolution kernels a split load (~1.3× slower overall) and cost ~10% on
//! unaligned activations.

#[derive(Default)]
pub(crate) struct Aligned {
    v: Vec<f32>,
    off: usize,
    len: usize,
}

impl Aligned {
    pub(crate) fn zeroed(len: usize) -> Aligned {
        let v = vec![0.0f32; len + 15];
        let off = aligned_offset(&v);
        Aligned { v, off, len }
    }
    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.v[self.off..self.off + self.len]
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// Index of the first 64-byte-aligned element of `v` (< 16 when v has ≥ 16 elements).
pub(crate) fn aligned_offset(v: &[f32]) -> usize {
    let addr = v.as_ptr() as usize;
    (addr.wrapping_neg() % 64) / 4
}
