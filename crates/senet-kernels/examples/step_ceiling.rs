//! How close the AVX2 microkernel's reduction step comes to the FMA peak when its data
//! is in L1 and L2: the ceiling of the direct-convolution layers on an AVX2 core.
//!
//! `cargo run --release -p senet-kernels --example step_ceiling [rounds]`
//! Environment: `K=channels` (reduction length, default 256: the weights, 16 KiB per
//! output block, stay in L1), `PX=pixels` (pixels per input plane run through, default
//! 192, rounded down to a multiple of 6), `PLANE=pixels` (distance between the input
//! blocks' planes, default `PX`; e.g. 3136 for a 56×56 map).
//!
//! Three loops with the same FMA count, interleaved round by round on one thread (CPU
//! time); the ratios are medians of the per-round ratios:
//! - **step 6x16**: the kernels' own step, `blocked_kernel.rs`'s `avx2_step16_6` (per
//!   input channel 2 weight loads, 6 broadcasts, 12 FMAs; 16 channels per block as two
//!   8-step halves), per tile of 6 pixels every input block with the accumulators in
//!   registers, as the kernel's tile function runs it;
//! - **step 3x32**: 3 pixels × 2 output blocks (per channel 3 broadcasts, then per
//!   weight vector one load and 3 FMAs: 19 macro-ops per 12 FMAs instead of 20, half the
//!   broadcasts), half as many tiles;
//! - **registers**: the same 12 accumulators fed from registers only (no load, no
//!   broadcast): the arithmetic ceiling, as `peak.rs` measures it.
//!
//! What it showed on the shared Zen 3 host (fifteenth session, BENCHMARKS.md): the
//! register loop runs at 99–102 GFLOP/s in every run, the 6x16 step at 76–99% of it
//! depending on the moment (the same settings, runs a minute apart): the other tenant on
//! the core's sibling thread takes load and dispatch slots from the step, not from the
//! register loop. The 3x32 step is within a few percent of the 6x16 one either way.
//!
//! On x86-64 CPUs without AVX2 and FMA it prints that and exits; elsewhere likewise.

mod common;

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::asm;
    use core::arch::x86_64::{__m256, _mm256_setzero_ps};

    use crate::common;
    use senet_kernels::nn::blocked::avx2_step16_6;

    type Acc = [__m256; 12];

    /// One 16-channel block of a 3-pixel × 2-block step (weights 32 per channel).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn step3(x: *const f32, w: *const f32, a: &mut Acc) {
        asm!(
            "2:",
            ".irp ci, 0,1,2,3,4,5,6,7",
            "vbroadcastss ymm13, dword ptr [{x} + \\ci*4]",
            "vbroadcastss ymm14, dword ptr [{x} + \\ci*4 + 64]",
            "vbroadcastss ymm15, dword ptr [{x} + \\ci*4 + 128]",
            "vmovups ymm12, ymmword ptr [{w} + \\ci*128]",
            "vfmadd231ps ymm0, ymm13, ymm12",
            "vfmadd231ps ymm4, ymm14, ymm12",
            "vfmadd231ps ymm8, ymm15, ymm12",
            "vmovups ymm12, ymmword ptr [{w} + \\ci*128 + 32]",
            "vfmadd231ps ymm1, ymm13, ymm12",
            "vfmadd231ps ymm5, ymm14, ymm12",
            "vfmadd231ps ymm9, ymm15, ymm12",
            "vmovups ymm12, ymmword ptr [{w} + \\ci*128 + 64]",
            "vfmadd231ps ymm2, ymm13, ymm12",
            "vfmadd231ps ymm6, ymm14, ymm12",
            "vfmadd231ps ymm10, ymm15, ymm12",
            "vmovups ymm12, ymmword ptr [{w} + \\ci*128 + 96]",
            "vfmadd231ps ymm3, ymm13, ymm12",
            "vfmadd231ps ymm7, ymm14, ymm12",
            "vfmadd231ps ymm11, ymm15, ymm12",
            ".endr",
            "add {x}, 32",
            "add {w}, 1024",
            "dec {k:e}",
            "jnz 2b",
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            k = inout(reg) 2u32 => _,
            inout("ymm0") a[0], inout("ymm1") a[1], inout("ymm2") a[2], inout("ymm3") a[3],
            inout("ymm4") a[4], inout("ymm5") a[5], inout("ymm6") a[6], inout("ymm7") a[7],
            inout("ymm8") a[8], inout("ymm9") a[9], inout("ymm10") a[10], inout("ymm11") a[11],
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack, readonly),
        );
    }

    /// 16 × 12 FMAs from registers only, in the same loop shape.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn regs(a: &mut Acc) {
        asm!(
            "vxorps ymm12, ymm12, ymm12",
            "vxorps ymm13, ymm13, ymm13",
            "vxorps ymm14, ymm14, ymm14",
            "vxorps ymm15, ymm15, ymm15",
            "2:",
            ".irp ci, 0,1,2,3,4,5,6,7",
            "vfmadd231ps ymm0, ymm14, ymm12",
            "vfmadd231ps ymm1, ymm14, ymm13",
            "vfmadd231ps ymm2, ymm15, ymm12",
            "vfmadd231ps ymm3, ymm15, ymm13",
            "vfmadd231ps ymm4, ymm14, ymm12",
            "vfmadd231ps ymm5, ymm14, ymm13",
            "vfmadd231ps ymm6, ymm15, ymm12",
            "vfmadd231ps ymm7, ymm15, ymm13",
            "vfmadd231ps ymm8, ymm14, ymm12",
            "vfmadd231ps ymm9, ymm14, ymm13",
            "vfmadd231ps ymm10, ymm15, ymm12",
            "vfmadd231ps ymm11, ymm15, ymm13",
            ".endr",
            "dec {k:e}",
            "jnz 2b",
            k = inout(reg) 2u32 => _,
            inout("ymm0") a[0], inout("ymm1") a[1], inout("ymm2") a[2], inout("ymm3") a[3],
            inout("ymm4") a[4], inout("ymm5") a[5], inout("ymm6") a[6], inout("ymm7") a[7],
            inout("ymm8") a[8], inout("ymm9") a[9], inout("ymm10") a[10], inout("ymm11") a[11],
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack, nomem),
        );
    }

    /// Sums a finished tile's accumulators into `sink` (the tile's one store).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn finish(a: &Acc, sink: &mut Acc) {
        use core::arch::x86_64::_mm256_add_ps;
        for (s, v) in sink.iter_mut().zip(a) {
            *s = _mm256_add_ps(*s, *v);
        }
    }

    /// One pass of 6×16 tiles over the pixels: per tile every input block, the
    /// accumulators in registers throughout (as in the kernel's tile function).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pass6(x: &[f32], w: &[f32], nblk: usize, px: usize, plane: usize, sink: &mut Acc) {
        for tile in 0..px / 6 {
            let mut a: Acc = [_mm256_setzero_ps(); 12];
            for b in 0..nblk {
                // Pixels tile·6..+6 of plane b and the block's 16 × 16 weights.
                avx2_step16_6::<16, 16>(x.as_ptr().add((b * plane + tile * 6) * 16), w.as_ptr().add(b * 256), &mut a);
            }
            finish(&a, sink);
        }
    }

    /// One pass of 3×32 tiles: each covers 2 output blocks, so half as many tiles (of 3
    /// pixels) give the same FMA count.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pass3(x: &[f32], w: &[f32], nblk: usize, px: usize, plane: usize, sink: &mut Acc) {
        for tile in 0..px / 6 {
            let mut a: Acc = [_mm256_setzero_ps(); 12];
            for b in 0..nblk {
                // Pixels tile·3..+3 of plane b and the block's 16 × 32 weights.
                step3(x.as_ptr().add((b * plane + tile * 3) * 16), w.as_ptr().add(b * 512), &mut a);
            }
            finish(&a, sink);
        }
    }

    /// The same number of 16-step blocks from registers only.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pass_regs(nblk: usize, px: usize, sink: &mut Acc) {
        for _ in 0..px / 6 {
            let mut a: Acc = [_mm256_setzero_ps(); 12];
            for _ in 0..nblk {
                regs(&mut a);
            }
            finish(&a, sink);
        }
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    pub fn main() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            println!("no AVX2/FMA on this CPU: nothing to measure");
            return;
        }
        let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(31);
        let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        let nblk = (env("K", 256) / 16).max(1);
        let px = env("PX", 192).max(6) / 6 * 6;
        // Blk16 input: nblk planes of px pixels × 16 channels; weights for 2 output
        // blocks (the 6×16 step reads the first 16 of each row of 32 as its own rows).
        let plane = env("PLANE", px).max(px);
        let x: Vec<f32> = (0..nblk * plane * 16).map(|i| (i % 7) as f32 * 1e-3).collect();
        let w6: Vec<f32> = (0..nblk * 256).map(|i| (i % 5) as f32 * 1e-3).collect();
        let w3: Vec<f32> = (0..nblk * 512).map(|i| (i % 5) as f32 * 1e-3).collect();
        // Per round about 20 ms of FMAs per loop.
        let per_pass = (nblk * px * 2 * 16 * 16) as f64; // flops of one pass over the pixels (16 channels × 16 outputs per pixel, ×2)
        let passes = ((2.0e9 * 0.02) / per_pass).max(1.0) as usize;
        let mut t = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (k, tk) in t.iter_mut().enumerate() {
                let mut a: Acc = unsafe { [_mm256_setzero_ps(); 12] };
                let t0 = common::thread_cpu_seconds();
                for _ in 0..passes {
                    // SAFETY: AVX2 and FMA checked above; the passes read inside x, w6, w3.
                    unsafe {
                        match k {
                            0 => pass6(&x, &w6, nblk, px, plane, &mut a),
                            1 => pass3(&x, &w3, nblk, px, plane, &mut a),
                            _ => pass_regs(nblk, px, &mut a),
                        }
                    }
                }
                tk.push(common::thread_cpu_seconds() - t0);
                std::hint::black_box(&a);
            }
        }
        // 12 FMAs × 8 lanes × 2 flops per step, 16 steps per block call.
        let flops = (passes * (px / 6) * nblk * 16 * 12 * 8 * 2) as f64;
        let gf = |v: &Vec<f64>| flops / median(v.clone()) / 1e9;
        let ratio = |i: usize| median(t[i].iter().zip(&t[2]).map(|(a, b)| b / a).collect());
        println!("AVX2, K = {} channels, {} pixels (planes {} pixels apart), {rounds} rounds (medians, 1 thread, CPU time)", nblk * 16, px, plane);
        println!("registers only   {:6.1} GFLOP/s", gf(&t[2]));
        println!("step 6x16        {:6.1} GFLOP/s   {:.1}% of the register loop", gf(&t[0]), 100.0 * ratio(0));
        println!("step 3x32        {:6.1} GFLOP/s   {:.1}% of the register loop", gf(&t[1]), 100.0 * ratio(1));
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    imp::main();
    #[cfg(not(target_arch = "x86_64"))]
    println!("x86-64 only: nothing to measure");
}
