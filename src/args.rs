//! Argument checks and conversions shared by the binding's modules.

use napi::bindgen_prelude::*;
use senet_kernels::{Layout, Shape4};

pub fn invalid(msg: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, msg.into())
}

pub fn shape(n: u32, c: u32, h: u32, w: u32) -> Result<(Shape4, usize)> {
    let s = Shape4::new(n as usize, c as usize, h as usize, w as usize);
    if n == 0 || c == 0 || h == 0 || w == 0 {
        return Err(invalid(format!("shape dims must be positive, got [{n}, {c}, {h}, {w}]")));
    }
    let len = s.len().ok_or_else(|| invalid("shape overflows"))?;
    Ok((s, len))
}

pub fn layout(nhwc: bool) -> Layout {
    if nhwc { Layout::Nhwc } else { Layout::Nchw }
}

pub fn check_len(name: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(invalid(format!("{name}.length must be {want}, got {got}")));
    }
    Ok(())
}

/// Byte range of a slice, for overlap tests between JS buffers.
pub fn range(s: &[f32]) -> std::ops::Range<usize> {
    let a = s.as_ptr() as usize;
    a..a + std::mem::size_of_val(s)
}

pub fn overlaps(a: &[f32], b: &[f32]) -> bool {
    let (ra, rb) = (range(a), range(b));
    !a.is_empty() && !b.is_empty() && ra.start < rb.end && rb.start < ra.end
}
