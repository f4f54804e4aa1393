//! Memory-bandwidth reference: a multithreaded copy on the kernel pool. Benchmarks
//! express a memory-bound kernel's speed as a fraction of this copy's bandwidth measured
//! in the same run on the same buffer.

use crate::pool::{self, PAR_GRAIN};
use rayon::prelude::*;

/// `dst = src`, split across the pool in chunks of at least `PAR_GRAIN` floats.
pub fn copy(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "copy lengths");
    let threads = pool::num_threads().max(1);
    let chunk = src.len().div_ceil(threads).max(PAR_GRAIN);
    pool::install(|| {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn copies() {
        let src: Vec<f32> = (0..100_003).map(|i| i as f32).collect();
        let mut dst = vec![0.0; src.len()];
        super::copy(&src, &mut dst);
        assert_eq!(src, dst);
    }
}
