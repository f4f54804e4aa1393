//! SE kernels: squeeze, excite, scale, seBlock (sync and async).

use crate::args::{self, check_len, invalid, overlaps};
use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;
use senet_kernels::se::{self, ScaleIo, SeWeights};
use senet_kernels::{pool, Layout, Shape4};

fn weights<'a>(
    c: usize,
    w1: &'a [f32],
    b1: Option<&'a [f32]>,
    w2: &'a [f32],
    b2: Option<&'a [f32]>,
) -> Result<SeWeights<'a>> {
    if c == 0 || !w1.len().is_multiple_of(c) {
        return Err(invalid(format!("w1.length must be a multiple of C = {c}, got {}", w1.len())));
    }
    SeWeights::new(w1, b1, w2, b2, c, w1.len() / c).map_err(invalid)
}

/// Runs `f` with a [`ScaleIo`] built from JS buffers that may alias each other.
/// `out` exactly equal to `x` or to `residual` runs in place; any other overlap of `out`
/// with an input is resolved by copying the inputs first (never a torn read).
fn with_io<R>(
    x: &[f32],
    residual: Option<&[f32]>,
    out: Option<&mut Float32ArraySlice>,
    f: impl FnOnce(ScaleIo) -> R,
) -> (R, Option<Vec<f32>>) {
    match out {
        None => {
            let mut y = vec![0.0f32; x.len()];
            let r = f(ScaleIo::Out { x, residual, out: &mut y });
            (r, Some(y))
        }
        Some(o) => {
            let (optr, olen) = (o.as_ptr(), o.len());
            // SAFETY: `o` is a live Float32Array of `olen` floats for the duration of this
            // synchronous call; the JS thread is blocked in it, so nothing else writes it.
            // The shared views of the inputs built below are only used when they do not
            // overlap the region written through `out_mut`, or are exactly that region in
            // the in-place forms, whose kernels read each element before writing it.
            let out_mut = unsafe { std::slice::from_raw_parts_mut(optr as *mut f32, olen) };
            let out_view = unsafe { std::slice::from_raw_parts(optr, olen) };
            let res_same = residual.is_some_and(|r| std::ptr::eq(r.as_ptr(), optr));
            if std::ptr::eq(x.as_ptr(), optr) && residual.is_none_or(|r| !overlaps(r, out_view)) {
                (f(ScaleIo::InPlace { xy: out_mut, residual }), None)
            } else if res_same && !overlaps(x, out_view) {
                (f(ScaleIo::IntoResidual { x, ry: out_mut }), None)
            } else if overlaps(x, out_view) || residual.is_some_and(|r| overlaps(r, out_view)) {
                let xc = x.to_vec();
                let rc = residual.map(|r| r.to_vec());
                (f(ScaleIo::Out { x: &xc, residual: rc.as_deref(), out: out_mut }), None)
            } else {
                (f(ScaleIo::Out { x, residual, out: out_mut }), None)
            }
        }
    }
}

/// Checks an activation `x` of shape [n, c, h, w] and the `residual` / `out` buffers of
/// the same length.
#[allow(clippy::too_many_arguments)]
fn activation(x: &[f32], residual: Option<&[f32]>, out: Option<&[f32]>, n: u32, c: u32, h: u32, w: u32) -> Result<Shape4> {
    let (s, len) = args::shape(n, c, h, w)?;
    check_len("x", x.len(), len)?;
    if let Some(r) = residual {
        check_len("residual", r.len(), len)?;
    }
    if let Some(o) = out {
        check_len("out", o.len(), len)?;
    }
    Ok(s)
}

fn result(y: Option<Vec<f32>>) -> Option<Float32Array> {
    y.map(Float32Array::new)
}

/// Channel means z[N·C]. Returns a new array, or nothing when `out` is given (filled).
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn squeeze(
    x: Float32ArraySlice,
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    nhwc: bool,
    mut out: Option<Float32ArraySlice>,
) -> Result<Option<Float32Array>> {
    let (s, len) = args::shape(n, c, h, w)?;
    check_len("x", x.len(), len)?;
    let zlen = s.n * s.c;
    if let Some(o) = &out {
        check_len("out", o.len(), zlen)?;
    }
    let layout = args::layout(nhwc);
    match out.as_mut() {
        Some(o) => {
            if overlaps(&x, o) {
                let mut z = vec![0.0f32; zlen];
                se::squeeze(&x, s, layout, &mut z);
                // SAFETY: synchronous call, `o` is a live array of zlen floats.
                unsafe { o.as_mut() }.copy_from_slice(&z);
            } else {
                // SAFETY: as above; `o` does not overlap `x`.
                se::squeeze(&x, s, layout, unsafe { o.as_mut() });
            }
            Ok(None)
        }
        None => {
            let mut z = vec![0.0f32; zlen];
            se::squeeze(&x, s, layout, &mut z);
            Ok(Some(Float32Array::new(z)))
        }
    }
}

/// Gates g[N·C] = sigmoid(W2·relu(W1·z + b1) + b2).
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn excite(
    z: Float32ArraySlice,
    n: u32,
    w1: Float32ArraySlice,
    b1: Option<Float32ArraySlice>,
    w2: Float32ArraySlice,
    b2: Option<Float32ArraySlice>,
    mut out: Option<Float32ArraySlice>,
) -> Result<Option<Float32Array>> {
    if n == 0 || !z.len().is_multiple_of(n as usize) {
        return Err(invalid(format!("z.length ({}) must be a positive multiple of n = {n}", z.len())));
    }
    let c = z.len() / n as usize;
    let wt = weights(c, &w1, b1.as_deref(), &w2, b2.as_deref())?;
    // Computed into a fresh buffer, then copied: `out` may alias z or the weights.
    let mut g = vec![0.0f32; z.len()];
    se::excite(&z, n as usize, &wt, &mut g);
    match out.as_mut() {
        Some(o) => {
            check_len("out", o.len(), g.len())?;
            // SAFETY: synchronous call; `o` is a live array of g.len() floats.
            unsafe { o.as_mut() }.copy_from_slice(&g);
            Ok(None)
        }
        None => Ok(Some(Float32Array::new(g))),
    }
}

/// y = act(x·gate [+ residual]).
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn scale(
    x: Float32ArraySlice,
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    nhwc: bool,
    gates: Float32ArraySlice,
    residual: Option<Float32ArraySlice>,
    relu: bool,
    mut out: Option<Float32ArraySlice>,
) -> Result<Option<Float32Array>> {
    let s = activation(&x, residual.as_deref(), out.as_deref(), n, c, h, w)?;
    check_len("gates", gates.len(), s.n * s.c)?;
    let layout = args::layout(nhwc);
    // Gates are tiny: copy them if they alias the output.
    let g: Vec<f32>;
    let gates: &[f32] = match &out {
        Some(o) if overlaps(&gates, o) => {
            g = gates.to_vec();
            &g
        }
        _ => &gates,
    };
    let ((), y) = with_io(&x, residual.as_deref(), out.as_mut(), |io| {
        se::scale(io, s, layout, gates, relu)
    });
    Ok(result(y))
}

/// Squeeze + excite + scale in two passes over x.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn se_block(
    x: Float32ArraySlice,
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    nhwc: bool,
    w1: Float32ArraySlice,
    b1: Option<Float32ArraySlice>,
    w2: Float32ArraySlice,
    b2: Option<Float32ArraySlice>,
    residual: Option<Float32ArraySlice>,
    relu: bool,
    mut out: Option<Float32ArraySlice>,
) -> Result<Option<Float32Array>> {
    let s = activation(&x, residual.as_deref(), out.as_deref(), n, c, h, w)?;
    // Weights may alias `out` (an odd but legal call): copy them then.
    let aliased = |a: &[f32]| out.as_ref().is_some_and(|o| overlaps(a, o));
    let own = |a: &Float32ArraySlice| aliased(a).then(|| a.to_vec());
    let (w1c, w2c) = (own(&w1), own(&w2));
    let (b1c, b2c) = (b1.as_ref().and_then(own), b2.as_ref().and_then(own));
    let w1s = w1c.as_deref().unwrap_or(&w1);
    let w2s = w2c.as_deref().unwrap_or(&w2);
    let b1s = b1c.as_deref().or(b1.as_deref());
    let b2s = b2c.as_deref().or(b2.as_deref());
    let wt = weights(s.c, w1s, b1s, w2s, b2s)?;
    let layout = args::layout(nhwc);
    let ((), y) = with_io(&x, residual.as_deref(), out.as_mut(), |io| {
        se::se_block(io, s, layout, &wt, relu)
    });
    Ok(result(y))
}

/// Owned inputs of an asynchronous SE block.
struct SeJob {
    x: Vec<f32>,
    residual: Option<Vec<f32>>,
    w1: Vec<f32>,
    b1: Option<Vec<f32>>,
    w2: Vec<f32>,
    b2: Option<Vec<f32>>,
    s: Shape4,
    layout: Layout,
    relu: bool,
}

impl SeJob {
    fn run(mut self) -> std::result::Result<Vec<f32>, String> {
        let c = self.s.c;
        let wt = SeWeights::new(&self.w1, self.b1.as_deref(), &self.w2, self.b2.as_deref(), c, self.w1.len() / c)?;
        // The copy of x is ours: compute in place, no second buffer.
        se::se_block(ScaleIo::InPlace { xy: &mut self.x, residual: self.residual.as_deref() }, self.s, self.layout, &wt, self.relu);
        Ok(self.x)
    }
}

/// Asynchronous SE block. The inputs are copied on the calling thread (so the caller may
/// reuse or mutate them as soon as this returns), the work runs on the kernel pool (no
/// libuv thread is held), and the promise resolves on the JS thread with a new array.
#[napi(ts_return_type = "Promise<Float32Array>")]
#[allow(clippy::too_many_arguments)]
pub fn se_block_async<'env>(
    env: &'env Env,
    x: Float32ArraySlice,
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    nhwc: bool,
    w1: Float32ArraySlice,
    b1: Option<Float32ArraySlice>,
    w2: Float32ArraySlice,
    b2: Option<Float32ArraySlice>,
    residual: Option<Float32ArraySlice>,
    relu: bool,
) -> Result<Object<'env>> {
    let s = activation(&x, residual.as_deref(), None, n, c, h, w)?;
    weights(s.c, &w1, b1.as_deref(), &w2, b2.as_deref())?;
    let job = SeJob {
        x: x.to_vec(),
        residual: residual.map(|r| r.to_vec()),
        w1: w1.to_vec(),
        b1: b1.map(|b| b.to_vec()),
        w2: w2.to_vec(),
        b2: b2.map(|b| b.to_vec()),
        s,
        layout: args::layout(nhwc),
        relu,
    };
    let (deferred, promise) = env.create_deferred()?;
    pool::pool().spawn(move || {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())) {
            Ok(Ok(y)) => deferred.resolve(move |_| Ok(Float32Array::new(y))),
            Ok(Err(e)) => deferred.reject(invalid(e)),
            Err(_) => deferred.reject(Error::new(Status::GenericFailure, "senet: seBlockAsync kernel panicked")),
        }
    });
    Ok(promise)
}
