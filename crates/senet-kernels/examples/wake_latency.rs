//! How long the senet pool's second thread takes to join a parallel op after being idle
//! (the reason for `pool::team`).
//!
//! `cargo run --release -p senet-kernels --example wake_latency`
//! On a pool of 2 threads, from inside it: spin `gap` µs on the calling thread (a serial
//! step between ops, during which the other thread has no work), then run two tasks of
//! 100 µs each as rayon's plain join; prints the median, 10th and 90th percentile of the
//! time beyond 100 µs over 300 rounds. ~1 µs when the other thread is still spinning in
//! rayon's idle loop; up to 100 µs (it took no part) once it has gone to sleep.

use senet_kernels::pool;
use std::time::{Duration, Instant};

fn spin(us: u64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

fn main() {
    use rayon::prelude::*;
    pool::set_num_threads(2).unwrap();
    for &gap in &[0u64, 5, 20, 50, 100, 300, 1000] {
        let mut over = Vec::new();
        pool::install(|| {
            for _ in 0..300 {
                spin(gap);
                let t = Instant::now();
                (0..2).into_par_iter().with_max_len(1).for_each(|_| spin(100));
                over.push(t.elapsed().as_secs_f64() * 1e6 - 100.0);
            }
        });
        over.sort_by(f64::total_cmp);
        println!("idle {gap:5} µs before the op: {:.1} µs over 100 (p10 {:.1}, p90 {:.1})", over[150], over[30], over[270]);
    }
}
