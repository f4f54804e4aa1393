//! Memory: a bandwidth reference (a multithreaded copy on the kernel pool; benchmarks
//! express a memory-bound kernel's speed as a fraction of this copy's bandwidth measured
//! in the same run on the same buffer), and [`release_free_heap`].

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

/// Hands the heap's free memory back to the operating system where the C library can
/// (glibc's `malloc_trim`; a no-op elsewhere). [`crate::graph::Model::new`] calls it once
/// the weights are packed: building seresnet50 frees tens of MB of transient buffers,
/// partly in the malloc arenas of pool threads, which glibc otherwise keeps mapped for
/// the life of the process (seresnet50, 2 threads, the resident set of the memory
/// spec's child process while it runs batch-1 forwards after the build: 240–248 MB
/// without, 232–237 MB with, five runs each). Only free memory is released; a later
/// allocation maps pages again as needed.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim takes no pointer and only unmaps or advises away pages of
        // free chunks; it is thread-safe (it locks each arena).
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Freed memory comes back as usable memory after the trim (nothing live is touched).
    #[test]
    fn release_free_heap_keeps_live_data() {
        let keep: Vec<u64> = (0..1 << 16).collect();
        let freed: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1 << 20]).collect();
        drop(freed);
        super::release_free_heap();
        assert!(keep.iter().enumerate().all(|(i, &v)| v == i as u64));
        let again = vec![7u8; 8 << 20];
        assert!(again.iter().all(|&b| b == 7));
    }

    #[test]
    fn copies() {
        let src: Vec<f32> = (0..100_003).map(|i| i as f32).collect();
        let mut dst = vec![0.0; src.len()];
        super::copy(&src, &mut dst);
        assert_eq!(src, dst);
    }
}
