#![deny(clippy::all)]
// The #[napi] exports are registered by the macro outside test builds only, so the
// helpers they call look unused to a test build.
#![cfg_attr(test, allow(dead_code))]
//! N-API binding of the senet kernels. This crate only validates, converts and
//! dispatches: the math lives in `crates/senet-kernels`. The TypeScript layer (`lib/`)
//! validates every argument first and throws TypeError/RangeError; the checks here are
//! the second line of defence that keeps a direct caller of `index.js` from reading out
//! of bounds (they throw plain errors with code `InvalidArg`).

mod args;
mod bench;
mod model;
mod se;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use senet_kernels::{pool, simd, SimdLevel};

/// The instruction-set level the kernels use now: 'avx512' | 'avx2' | 'neon' | 'scalar'.
#[napi]
pub fn simd_level() -> String {
    simd::level().name().to_string()
}

/// Every level this CPU can run, most portable first.
#[napi]
pub fn supported_simd_levels() -> Vec<String> {
    simd::supported_levels().iter().map(|l| l.name().to_string()).collect()
}

/// Forces a SIMD level (for tests and benchmarks). Errors if the CPU cannot run it.
#[napi]
pub fn set_simd_level(level: String) -> Result<()> {
    let l = SimdLevel::parse(&level)
        .ok_or_else(|| args::invalid(format!("unknown SIMD level '{level}'")))?;
    simd::set_level(l).map_err(args::invalid)
}

/// Resizes the one thread pool all kernels run on.
#[napi]
pub fn set_num_threads(n: u32) -> Result<()> {
    pool::set_num_threads(n as usize).map_err(args::invalid)
}

/// Number of threads of the kernel pool.
#[napi]
pub fn get_num_threads() -> u32 {
    pool::num_threads() as u32
}

/// Copies `src` into `out` with the kernel pool's threads: the memory-bandwidth
/// reference that benchmarks compare memory-bound kernels against.
#[napi]
pub fn copy_f32(src: Float32ArraySlice, mut out: Float32ArraySlice) -> Result<()> {
    args::check_len("out", out.len(), src.len())?;
    if args::overlaps(&src, &out) {
        return Err(args::invalid("copyF32: src and out must not overlap"));
    }
    // SAFETY: synchronous call; `out` is a live array that does not overlap `src`.
    senet_kernels::mem::copy(&src, unsafe { out.as_mut() });
    Ok(())
}
