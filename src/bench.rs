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
pub fn peak_gflops(millis: f64) -> Result<f64> {
    Ok(peak::measure(duration("peakGflops", millis)?).gflops)
}

/// `millis` as a duration: an integer number of milliseconds in 1..=60000 (taken as a
/// JS number, so that -1 or 1.5 are reported as given rather than wrapped or truncated).
fn duration(f: &str, millis: f64) -> Result<Duration> {
    if !(millis.fract() == 0.0 && (1.0..=60_000.0).contains(&millis)) {
        return Err(invalid(format!("{f}: millis must be an integer in 1..=60000, got {millis}")));
    }
    Ok(Duration::from_millis(millis as u64))
}

/// GFLOP/s of a cache-sensitive layer (1×1 convolution 1024→256 on a 14×14 map, batch 1:
/// its 1 MiB of weights and 0.8 MB of input fill a core's L2): the median of its runs back
/// to back on the kernel pool for about `millis` ms. Reported beside [`peak_gflops`]: a host
/// whose caches another tenant shares keeps its FMA peak but slows this layer (and every
/// real kernel) down, so a benchmark can show that it ran contended. Blocks the calling
/// thread, like [`peak_gflops`].
#[napi]
pub fn layer_probe_gflops(millis: f64) -> Result<f64> {
    Ok(peak::layer_probe(duration("layerProbeGflops", millis)?))
}
