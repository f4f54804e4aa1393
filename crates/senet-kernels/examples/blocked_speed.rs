//! Speed of `nn::blocked::ConvBlk` on SE-ResNet-50 shapes.
//!
//! `cargo run --release -p senet-kernels --example blocked_speed [reps]`
//! Environment: `SHAPE=substring` runs only matching shapes, `BATCH=n` one batch size,
//! `ALIGN=0` misaligns the blocked activations (default: 64-byte aligned), `COLD=1`
//! evicts the caches before every run, `AB=taps` alternates each layer with the tap
//! planes of strided k×k layers off and on (see `ab`). Prints
//! best-of-`reps` GFLOP/s (2 flops per multiply-add, padding taps included) at batch 1
//! and 8, 1 and 2 threads (the machine is shared; 1-thread times are CPU times), with
//! the FMA peak measured in the same run.

use senet_kernels::nn::blocked::{blk16_len, set_taps, ConvBlk};
use senet_kernels::{pool, simd, Shape4};
use std::time::Instant;

mod common;
use common::thread_cpu_seconds;

/// `ALIGN=0` measures misaligned activations (default: 64-byte aligned).
fn buf(len: usize, f: impl Fn(usize) -> f32) -> (Vec<f32>, usize) {
    common::buf(len, std::env::var("ALIGN").map_or(true, |v| v != "0"), f)
}

/// Times single runs. At 1 thread the work runs inline on this thread, so its CPU time
/// is measured (other processes on the shared machine cannot inflate it). With
/// `COLD=1`, a 64 MiB buffer is rewritten before every timed run, so that the weights
/// come from memory as in a batch-1 forward (where each layer's weights are read once),
/// not from the cache the previous run left them in.
struct Timer {
    evict: Vec<u8>,
    wall: Instant,
    threads: usize,
    round: u8,
}

impl Timer {
    fn new(threads: usize) -> Timer {
        let cold = std::env::var("COLD").is_ok_and(|v| v == "1");
        Timer { evict: if cold { vec![0u8; 64 << 20] } else { Vec::new() }, wall: Instant::now(), threads, round: 0 }
    }

    /// Seconds `f` takes, after the optional eviction.
    fn time(&mut self, f: impl FnOnce()) -> f64 {
        self.round = self.round.wrapping_add(1);
        for b in self.evict.iter_mut().step_by(64) {
            *b = b.wrapping_add(self.round);
        }
        std::hint::black_box(&self.evict);
        let clock = || if self.threads == 1 { thread_cpu_seconds() } else { self.wall.elapsed().as_secs_f64() };
        let t0 = clock();
        f();
        clock() - t0
    }
}

/// Best time of `reps` runs (see [`Timer`]).
fn best(reps: usize, threads: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut timer = Timer::new(threads);
    (0..reps).map(|_| timer.time(&mut f)).fold(f64::INFINITY, f64::min)
}

/// `AB=taps`: the layer with tap planes off (A) and on (B), alternated run by run
/// (`reps` pairs, the order flipping every pair; see [`Timer`]): median ms of each and
/// the median of the per-pair ratios B/A, so that a noisy host slows both alike.
fn ab(reps: usize, threads: usize, mut f: impl FnMut(bool)) -> (f64, f64, f64) {
    f(false);
    f(true);
    let mut timer = Timer::new(threads);
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..reps {
        let mut pair = [0.0f64; 2];
        for k in 0..2 {
            let on = (k + r) % 2 == 1;
            pair[usize::from(on)] = timer.time(|| f(on));
        }
        ta.push(pair[0] * 1e3);
        tb.push(pair[1] * 1e3);
        ratios.push(pair[1] / pair[0]);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (med(&mut ta), med(&mut tb), med(&mut ratios))
}

fn main() {
    let ab_taps = std::env::var("AB").is_ok_and(|v| v == "taps");
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    // (name, cin, cout, k, stride, pad, groups, h)
    let shapes = [
        ("stem 7x7/2 3->64 @224", 3, 64, 7, 2, 3, 1, 224),
        ("1x1 64->64 @56", 64, 64, 1, 1, 0, 1, 56),
        ("1x1 64->256 @56", 64, 256, 1, 1, 0, 1, 56),
        ("1x1 256->64 @56", 256, 64, 1, 1, 0, 1, 56),
        ("3x3 64->64 @56", 64, 64, 3, 1, 1, 1, 56),
        ("3x3/2 128->128 @56", 128, 128, 3, 2, 1, 1, 56),
        ("1x1 512->128 @28", 512, 128, 1, 1, 0, 1, 28),
        ("1x1 128->512 @28", 128, 512, 1, 1, 0, 1, 28),
        ("1x1 1024->256 @14", 1024, 256, 1, 1, 0, 1, 14),
        ("1x1 256->1024 @14", 256, 1024, 1, 1, 0, 1, 14),
        ("1x1 512->2048 @7", 512, 2048, 1, 1, 0, 1, 7),
        ("3x3 256->256 @14", 256, 256, 3, 1, 1, 1, 14),
        ("3x3 512->512 @7", 512, 512, 3, 1, 1, 1, 7),
        ("3x3/2 256->256 @28", 256, 256, 3, 2, 1, 1, 28),
        ("3x3/2 512->512 @14", 512, 512, 3, 2, 1, 1, 14),
        ("1x1/2 1024->2048 @14", 1024, 2048, 1, 2, 0, 1, 14),
        ("1x1 2048->512 @7", 2048, 512, 1, 1, 0, 1, 7),
        ("3x3 g32 128->128 @56", 128, 128, 3, 1, 1, 32, 56),
        ("3x3 g32 1024->1024 @7", 1024, 1024, 3, 1, 1, 32, 7),
    ];
    let only = std::env::var("SHAPE").ok();
    let batches: Vec<usize> = match std::env::var("BATCH") {
        Ok(b) => vec![b.parse().expect("BATCH")],
        Err(_) => vec![1, 8],
    };
    for t in [1, 2] {
        pool::set_num_threads(t).unwrap();
        let p = senet_kernels::peak::measure(std::time::Duration::from_millis(300));
        println!("FMA peak now, {t} thread(s): {:.0} GFLOP/s", p.gflops);
    }
    if ab_taps {
        println!("level {:?}, {reps} alternated pairs: median ms tap planes off / on, median ratio on/off", simd::level());
    } else {
        println!("level {:?}, best of {reps}, GFLOP/s", simd::level());
    }
    let mut head = format!("{:<24}", "shape");
    for &n in &batches {
        for t in [1, 2] {
            head += &format!(" {:>15}", format!("b{n} t{t}"));
        }
    }
    println!("{head}");
    for &(name, cin, cout, k, stride, pad, groups, h) in &shapes {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let wlen = cout * (cin / groups) * k * k;
        let weight: Vec<f32> = (0..wlen).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let bias = vec![0.1f32; cout];
        let blk = ConvBlk::new(&weight, &bias, cin, cout, k, k, stride, pad, groups);
        let (oh, ow) = blk.output_hw(h, h).unwrap();
        let mut line = format!("{name:<24}");
        for &n in &batches {
            let xs = Shape4::new(n, cin, h, h);
            let ys = Shape4::new(n, cout, oh, ow);
            let stem = cin < 16;
            let xlen = if stem { xs.len().unwrap() } else { blk16_len(xs) };
            let (xv, xo_) = buf(xlen, |i| ((i * 31) % 997) as f32 * 1e-3);
            let x = &xv[xo_..xo_ + xlen];
            let ylen = blk16_len(ys);
            let (mut yv, yo_) = buf(ylen, |_| 0.0);
            let y = &mut yv[yo_..yo_ + ylen];
            let (rv, ro_) = buf(ylen, |_| 0.0);
            let res = &rv[ro_..ro_ + ylen];
            let flops = 2.0 * (n * cout * oh * ow * (cin / groups) * k * k) as f64;
            for t in [1usize, 2] {
                pool::set_num_threads(t).unwrap();
                let mut run = || {
                    if stem {
                        blk.run_nchw(x, xs, y, Some(res), true)
                    } else {
                        blk.run(x, xs, y, Some(res), true)
                    }
                };
                if ab_taps {
                    let (off, on, ratio) = ab(reps, t, |on| {
                        set_taps(Some(on));
                        run();
                    });
                    set_taps(None);
                    let cell = format!("{off:.2}/{on:.2} {ratio:.3}");
                    line += &format!(" {cell:>22}");
                    continue;
                }
                let tb = best(reps, t, run);
                let cell = format!("{:.1}", flops / tb / 1e9);
                line += &format!(" {cell:>15}");
            }
        }
        println!("{line}");
    }
}
