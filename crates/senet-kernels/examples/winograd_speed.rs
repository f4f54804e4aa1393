//! Speed of `nn::winograd::ConvWino` (F(2,3), F(4,3)) against `nn::blocked::ConvBlk` on
//! the 3×3 stride-1 layers of SE-ResNet-50.
//!
//! `cargo run --release -p senet-kernels --example winograd_speed [reps]`
//! Environment: `SHAPE=substring`, `BATCH=n`, `THREADS=n`, `ENGINES=012` (subset of blocked, F2, F4),
//! `COLD=1` (a 64 MiB buffer rewritten before every timed run, so that the weights come
//! from memory as in a batch-1 forward). Prints best-of-`reps`
//! GFLOP/s-equivalent (direct-convolution flops 2·9·cin·cout·h·w·n, over each engine's
//! time), engines interleaved per cell (the machine is shared; 1-thread times are CPU
//! times). Residual + ReLU fused in every run.

use senet_kernels::nn::blocked::{blk16_len, ConvBlk};
use senet_kernels::nn::winograd::{ConvWino, WinoTile};
use senet_kernels::{pool, simd, Shape4};
use std::time::Instant;

mod common;
use common::thread_cpu_seconds;

fn buf(len: usize, f: impl Fn(usize) -> f32) -> (Vec<f32>, usize) {
    common::buf(len, true, f)
}

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    let shapes = [("3x3 64->64 @56", 64, 56), ("3x3 128->128 @28", 128, 28), ("3x3 256->256 @14", 256, 14), ("3x3 512->512 @7", 512, 7)];
    let only = std::env::var("SHAPE").ok();
    let batches: Vec<usize> = match std::env::var("BATCH") {
        Ok(b) => vec![b.parse().expect("BATCH")],
        Err(_) => vec![1, 8],
    };
    let threads: Vec<usize> = match std::env::var("THREADS") {
        Ok(t) => vec![t.parse().expect("THREADS")],
        Err(_) => vec![1, 2],
    };
    // `ENGINES=12`: only F2 and F4 (0 = blocked), for profiles.
    let engines: Vec<usize> = std::env::var("ENGINES").unwrap_or("012".into()).bytes().map(|b| (b - b'0') as usize).collect();
    let cold = std::env::var("COLD").is_ok_and(|v| v == "1");
    let mut evict = if cold { vec![0u8; 64 << 20] } else { Vec::new() };
    println!("level {:?}, best of {reps}, GFLOP/s-equivalent (direct flops / time): blk / F2 / F4", simd::level());
    for &(name, c, hw) in &shapes {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let weight: Vec<f32> = (0..c * c * 9).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let bias = vec![0.1f32; c];
        let blk = ConvBlk::new(&weight, &bias, c, c, 3, 3, 1, 1, 1);
        let f2 = ConvWino::with_tile(&weight, &bias, c, c, WinoTile::F2);
        let f4 = ConvWino::with_tile(&weight, &bias, c, c, WinoTile::F4);
        for &n in &batches {
            let xs = Shape4::new(n, c, hw, hw);
            let len = blk16_len(xs);
            let (xv, xo) = buf(len, |i| ((i * 31) % 997) as f32 * 1e-3);
            let (mut yv, yo) = buf(len, |_| 0.0);
            let (rv, ro) = buf(len, |i| ((i * 17) % 101) as f32 * 1e-2);
            let x = &xv[xo..xo + len];
            let res = &rv[ro..ro + len];
            let flops = 2.0 * (n * c * c * 9 * hw * hw) as f64;
            for &t in &threads {
                pool::set_num_threads(t).unwrap();
                let clock = |w: &Instant| if t == 1 { thread_cpu_seconds() } else { w.elapsed().as_secs_f64() };
                let wall = Instant::now();
                let mut best = [f64::INFINITY; 3];
                let y = &mut yv[yo..yo + len];
                for rep in 0..=reps {
                    for (e, b) in best.iter_mut().enumerate() {
                        if !engines.contains(&e) {
                            continue;
                        }
                        for v in evict.iter_mut().step_by(64) {
                            *v = v.wrapping_add(1);
                        }
                        std::hint::black_box(&evict);
                        let t0 = clock(&wall);
                        match e {
                            0 => blk.run(x, xs, y, Some(res), true),
                            1 => f2.run(x, xs, y, Some(res), true),
                            _ => f4.run(x, xs, y, Some(res), true),
                        }
                        let dt = clock(&wall) - t0;
                        if rep > 0 {
                            *b = b.min(dt);
                        }
                    }
                }
                let g: Vec<f64> = best.iter().map(|&s| flops / s / 1e9).collect();
                println!(
                    "{name:<18} b{n} t{t}: {:>5.0} / {:>5.0} / {:>5.0} GFLOP/s   ms {:.3} / {:.3} / {:.3}   F2 {:.2}x F4 {:.2}x",
                    g[0], g[1], g[2], best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, best[0] / best[1], best[0] / best[2]
                );
            }
        }
    }
}
