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

/// `f(scratch)` with at least `need` floats of the thread's buffer `key` from a
/// 64-byte-aligned start. The buffer grows to the largest request and is reused; a
/// nested call on the same thread (none today) gets a fresh allocation, not a panic.
pub(crate) fn with_scratch<R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
    need: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|buf| {
        let mut own = Vec::new();
        let mut guard = buf.try_borrow_mut();
        let dst: &mut Vec<f32> = match guard.as_deref_mut() {
            Ok(b) => b,
            Err(_) => &mut own,
        };
        if dst.len() < need + 16 {
            dst.resize(need + 16, 0.0);
        }
        let off = aligned_offset(dst);
        f(&mut dst[off..off + need])
    })
}
