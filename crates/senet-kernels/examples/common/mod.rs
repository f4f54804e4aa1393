//! Helpers shared by the speed examples (`mod common;` in each).
#![allow(dead_code)]

/// CPU time of the calling thread (Linux `CLOCK_THREAD_CPUTIME_ID`): at 1 thread the
/// work runs inline on this thread, so other processes on a shared machine cannot
/// inflate it.
pub fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid timespec (64-bit Linux layout) the call fills in.
    unsafe { clock_gettime(3, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// A vector of `len` floats from `f(i)` whose slice `[off..off+len]` starts 64-byte
/// aligned (what the graph hands the kernels), or one float past that when `aligned`
/// is false.
pub fn buf(len: usize, aligned: bool, f: impl Fn(usize) -> f32) -> (Vec<f32>, usize) {
    let mut v = vec![0.0f32; len + 16];
    let off = if aligned { ((v.as_ptr() as usize).wrapping_neg() % 64) / 4 } else { 1 };
    for i in 0..len {
        v[off + i] = f(i);
    }
    (v, off)
}
