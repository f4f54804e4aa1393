//! Machine measurements for the benchmarks (`bench/`): not part of the model API.

use crate::args::invalid;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use senet_kernels::peak;
use std::time::Duration;

/// Peak float32 multiply-add throughput in GFLOP/s (an FMA counts as 2 FLOP), measured
/// by running an FMA loop at the current SIMD level on every thread of the kernel pool
/// for `millis` ms. Blocks the calling thread for that long: call it from a benchmark,
/// between measurements, with the pool sized as for the kernels it is compared to.
#[napi]
pub fn peak_gflops(millis: u32) -> Result<f64> {
    if !(1..=60_000).contains(&millis) {
        return Err(invalid(format!("peakGflops: millis must be 1..=60000, got {millis}")));
    }
    Ok(peak::measure(Duration::from_millis(millis as u64)).gflops)
}
