//! Quick speed check of `nn::Conv2d` on SE-ResNet-50-like shapes.
//!
//! `cargo run --release -p senet-kernels --example conv_speed [reps]`
//! Environment: `SHAPE=substring` runs only matching shapes, `BATCH=n` one batch size.
//! Prints the best-of-`reps` GFLOP/s (the machine is shared: the minimum time is the
//! least disturbed one) (2 flops per multiply-add) at batch 1 and 8, 1 and 2
//! threads, for the current SIMD level (`SENET_SIMD` lowers it).

use senet_kernels::nn::Conv2d;
use senet_kernels::{pool, simd, Shape4};
use std::time::Instant;

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    // (name, cin, cout, k, stride, pad, groups, h)
    let shapes = [
        ("stem 7x7/2 3->64 @224", 3, 64, 7, 2, 3, 1, 224),
        ("1x1 256->64 @56", 256, 64, 1, 1, 0, 1, 56),
        ("3x3 64->64 @56", 64, 64, 3, 1, 1, 1, 56),
        ("1x1 64->256 @56", 64, 256, 1, 1, 0, 1, 56),
        ("3x3/2 128->128 @56", 128, 128, 3, 2, 1, 1, 56),
        ("3x3 256->256 @14", 256, 256, 3, 1, 1, 1, 14),
        ("1x1/2 1024->2048 @14", 1024, 2048, 1, 2, 0, 1, 14),
        ("3x3 512->512 @7", 512, 512, 3, 1, 1, 1, 7),
        ("3x3 g32 128->128 @56", 128, 128, 3, 1, 1, 32, 56),
        ("3x3/2 g32 256->256 @56", 256, 256, 3, 2, 1, 32, 56),
        ("3x3 g32 512->512 @14", 512, 512, 3, 1, 1, 32, 14),
        ("3x3 g32 1024->1024 @7", 1024, 1024, 3, 1, 1, 32, 7),
        ("3x3 g64 256->256 @56", 256, 256, 3, 1, 1, 64, 56),
    ];
    let wall = Instant::now();
    println!("level {:?}, best of {reps} (wall time; CPU_TIME=1: CPU time at 1 thread)", simd::level());
    let only = std::env::var("SHAPE").ok();
    println!("{:<26} {:>9} {:>9} {:>9} {:>9}", "shape", "b1 t1", "b1 t2", "b8 t1", "b8 t2");
    for &(name, cin, cout, k, stride, pad, groups, h) in &shapes {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let wlen = cout * (cin / groups) * k * k;
        let weight: Vec<f32> = (0..wlen).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let bias = vec![0.1f32; cout];
        let conv = Conv2d::new(&weight, &bias, cin, cout, k, k, stride, pad, groups);
        let (oh, ow) = conv.output_hw(h, h).unwrap();
        let mut line = format!("{name:<26}");
        let batches: Vec<usize> = match std::env::var("BATCH") {
            Ok(b) => vec![b.parse().expect("BATCH")],
            Err(_) => vec![1, 8],
        };
        for &n in &batches {
            let xs = Shape4::new(n, cin, h, h);
            let x: Vec<f32> = (0..xs.len().unwrap()).map(|i| ((i * 31) % 997) as f32 * 1e-3).collect();
            let mut y = vec![0.0f32; n * cout * oh * ow];
            let res = y.clone();
            let flops = 2.0 * (n * cout * oh * ow * (cin / groups) * k * k) as f64;
            for t in [1usize, 2] {
                pool::set_num_threads(t).unwrap();
                conv.run(&x, xs, &mut y, Some(&res), true); // warm-up
                // One thread runs inline on this thread: CPU_TIME=1 counts its CPU time,
                // which other processes on the shared machine cannot inflate.
                let cpu_clock = std::env::var("CPU_TIME").is_ok();
                let clock = |t: usize| if t == 1 && cpu_clock { thread_cpu_seconds() } else { wall.elapsed().as_secs_f64() };
                let mut times: Vec<f64> = (0..reps)
                    .map(|_| {
                        let t0 = clock(t);
                        conv.run(&x, xs, &mut y, Some(&res), true);
                        clock(t) - t0
                    })
                    .collect();
                times.sort_by(|a, b| a.partial_cmp(b).unwrap());
                line += &format!(" {:>9.1}", flops / times[0] / 1e9);
            }
        }
        println!("{line}");
    }
}

/// CPU time of the calling thread (Linux `CLOCK_THREAD_CPUTIME_ID`, via the C library
/// std already links; no extra dependency for an example).
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid timespec (64-bit Linux layout) the call fills in.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}
