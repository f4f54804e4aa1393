//! A tiny per-ISA vector trait. Kernels are written once, generically over [`Vf32`], and
//! instantiated per instruction set inside a `#[target_feature]` function by
//! [`simd_dispatch!`]; everything below is `#[inline(always)]` so that the intrinsics are
//! inlined into that function and compiled for its instruction set.
//!
//! The scalar implementation (`f32`, one lane) is both the portable fallback and the
//! tail loop of every vector kernel, so tails compute exactly what the scalar kernel does.

#![allow(clippy::missing_safety_doc)]

/// A vector of `LANES` f32 values.
///
/// # Safety
/// Every method may use instructions of its ISA: call them only from code compiled for
/// (and running on) a CPU with that ISA, i.e. through `simd_dispatch!`.
pub(crate) trait Vf32: Copy {
    const LANES: usize;
    unsafe fn splat(v: f32) -> Self;
    /// Unaligned load of `LANES` values.
    unsafe fn load(p: *const f32) -> Self;
    /// Unaligned store of `LANES` values.
    unsafe fn store(self, p: *mut f32);
    /// Non-temporal store (no read-for-ownership, bypasses the caches) where the ISA has
    /// one; `p` must be aligned to `4·LANES` bytes. Callers issue [`stream_fence`] before
    /// another thread may read the data.
    #[inline(always)]
    unsafe fn store_stream(self, p: *mut f32) {
        self.store(p)
    }
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// `self * b + c`, fused where the ISA has FMA.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    unsafe fn max(self, o: Self) -> Self;
    unsafe fn min(self, o: Self) -> Self;
    /// Round to nearest integer (ties to even), as a float.
    unsafe fn round(self) -> Self;
    /// `2^n` for integral `n` in [-126, 127].
    unsafe fn pow2i(n: Self) -> Self;
    /// Sum of the lanes, in a fixed order.
    unsafe fn reduce_add(self) -> f32;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Self::splat(0.0)
    }

    /// e^x with a relative error below ~3e-7 over the clamped range [-87.3, 88.0]
    /// (inputs outside it are clamped: ~1e-38 below, ~1.6e38 above, never inf/NaN).
    /// Cody-Waite range reduction x = n·ln2 + r, |r| <= ln2/2, then a degree-6 minimax
    /// polynomial for e^r (the Cephes `expf` coefficients).
    #[inline(always)]
    unsafe fn exp(self) -> Self {
        let x = self.max(Self::splat(-87.336_55)).min(Self::splat(88.0));
        let n = x.mul(Self::splat(std::f32::consts::LOG2_E)).round();
        // ln2 split in a part exact in f32 and a correction.
        let r = n.mul_add(Self::splat(-0.693_359_4), x);
        let r = n.mul_add(Self::splat(2.121_944_4e-4), r);
        let mut p = Self::splat(1.987_569_1e-4);
        p = p.mul_add(r, Self::splat(1.398_199_9e-3));
        p = p.mul_add(r, Self::splat(8.333_452e-3));
        p = p.mul_add(r, Self::splat(4.166_579_6e-2));
        p = p.mul_add(r, Self::splat(1.666_666_5e-1));
        p = p.mul_add(r, Self::splat(5e-1));
        let r2 = r.mul(r);
        let e = p.mul_add(r2, r.add(Self::splat(1.0)));
        // The clamp keeps n in [-126, 127], a normal exponent.
        e.mul(Self::pow2i(n))
    }

    /// 1 / (1 + e^-x). Absolute error below 1e-7 against the float64 result.
    #[inline(always)]
    unsafe fn sigmoid(self) -> Self {
        let one = Self::splat(1.0);
        one.div(one.add(Self::splat(0.0).sub(self).exp()))
    }
}

impl Vf32 for f32 {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        *p
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        self / o
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // Not f32::mul_add: without hardware FMA that is a slow libm call. The scalar
        // kernels therefore round twice where the SIMD ones round once; tests compare
        // every level against a float64 reference, not bitwise against each other.
        self * b + c
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        if self > o { self } else { o }
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        if self < o { self } else { o }
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        self.round_ties_even()
    }
    #[inline(always)]
    unsafe fn pow2i(n: Self) -> Self {
        f32::from_bits((((n as i32) + 127) as u32) << 23)
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        self
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vf32;
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(pub(crate) __m256);

    impl Vf32 for Avx2 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx2(_mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn store_stream(self, p: *mut f32) {
            _mm256_stream_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            Avx2(_mm256_add_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            Avx2(_mm256_sub_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            Avx2(_mm256_mul_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            Avx2(_mm256_div_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            Avx2(_mm256_max_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            Avx2(_mm256_min_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            Avx2(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0))
        }
        #[inline(always)]
        unsafe fn pow2i(n: Self) -> Self {
            let i = _mm256_cvtps_epi32(n.0);
            let i = _mm256_slli_epi32::<23>(_mm256_add_epi32(i, _mm256_set1_epi32(127)));
            Avx2(_mm256_castsi256_ps(i))
        }
        #[inline(always)]
        unsafe fn reduce_add(self) -> f32 {
            let lo = _mm256_castps256_ps128(self.0);
            let hi = _mm256_extractf128_ps::<1>(self.0);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }

    /// AVX-512F, 16 lanes.
    #[cfg(not(feature = "emulate-avx512"))]
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    /// The `emulate-avx512` feature's stand-in for AVX-512F (tests only): 16 lanes in
    /// portable code, each operation computing exactly what its intrinsic does (IEEE
    /// add, sub, mul, div per lane; a fused multiply-add, `f32::mul_add`; `maxps`/`minps`
    /// returning the second operand on NaN or equal inputs; round to nearest even; the
    /// same lane order in `reduce_add`). The kernels built on it are the AVX-512 level's,
    /// compiled without `target_feature(enable = "avx512f")`, so they run on any x86-64
    /// CPU and compute the AVX-512 level's bits.
    #[cfg(feature = "emulate-avx512")]
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512([f32; 16]);

    #[cfg(feature = "emulate-avx512")]
    impl Avx512 {
        #[inline(always)]
        fn map(self, f: impl Fn(f32) -> f32) -> Self {
            Avx512(self.0.map(f))
        }
        #[inline(always)]
        fn zip(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
            let mut r = [0.0f32; 16];
            for (i, v) in r.iter_mut().enumerate() {
                *v = f(self.0[i], o.0[i]);
            }
            Avx512(r)
        }
    }

    #[cfg(feature = "emulate-avx512")]
    impl Vf32 for Avx512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx512([v; 16])
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(std::ptr::read_unaligned(p as *const [f32; 16]))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            std::ptr::write_unaligned(p as *mut [f32; 16], self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            self.zip(o, |a, b| a + b)
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            self.zip(o, |a, b| a - b)
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            self.zip(o, |a, b| a * b)
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            self.zip(o, |a, b| a / b)
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            let mut r = [0.0f32; 16];
            for (i, v) in r.iter_mut().enumerate() {
                *v = self.0[i].mul_add(b.0[i], c.0[i]);
            }
            Avx512(r)
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            self.zip(o, |a, b| if a > b { a } else { b })
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            self.zip(o, |a, b| if a < b { a } else { b })
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            self.map(f32::round_ties_even)
        }
        #[inline(always)]
        unsafe fn pow2i(n: Self) -> Self {
            n.map(|v| f32::from_bits(((v.round_ties_even() as i32).wrapping_add(127) as u32) << 23))
        }
        #[inline(always)]
        unsafe fn reduce_add(self) -> f32 {
            // As the intrinsics: the two 256-bit halves added, then Avx2's order.
            let a = self.0;
            let u: [f32; 8] = std::array::from_fn(|i| a[i] + a[i + 8]);
            let s: [f32; 4] = std::array::from_fn(|i| u[i] + u[i + 4]);
            (s[0] + s[2]) + (s[1] + s[3])
        }
    }

    #[cfg(not(feature = "emulate-avx512"))]
    impl Vf32 for Avx512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx512(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn store_stream(self, p: *mut f32) {
            _mm512_stream_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            Avx512(_mm512_add_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            Avx512(_mm512_sub_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            Avx512(_mm512_mul_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            Avx512(_mm512_div_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            Avx512(_mm512_max_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            Avx512(_mm512_min_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            Avx512(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0))
        }
        #[inline(always)]
        unsafe fn pow2i(n: Self) -> Self {
            let i = _mm512_cvtps_epi32(n.0);
            let i = _mm512_slli_epi32::<23>(_mm512_add_epi32(i, _mm512_set1_epi32(127)));
            Avx512(_mm512_castsi512_ps(i))
        }
        #[inline(always)]
        unsafe fn reduce_add(self) -> f32 {
            let lo = _mm512_castps512_ps256(self.0);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
            Avx2(_mm256_add_ps(lo, hi)).reduce_add()
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Vf32;
    use std::arch::aarch64::*;

    /// aarch64 Advanced SIMD, 4 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Neon(float32x4_t);

    impl Vf32 for Neon {
        const LANES: usize = 4;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Neon(vdupq_n_f32(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Neon(vld1q_f32(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            vst1q_f32(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            Neon(vaddq_f32(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            Neon(vsubq_f32(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            Neon(vmulq_f32(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            Neon(vdivq_f32(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            Neon(vfmaq_f32(c.0, self.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            Neon(vmaxq_f32(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            Neon(vminq_f32(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            Neon(vrndnq_f32(self.0))
        }
        #[inline(always)]
        unsafe fn pow2i(n: Self) -> Self {
            let i = vcvtnq_s32_f32(n.0);
            let i = vshlq_n_s32::<23>(vaddq_s32(i, vdupq_n_s32(127)));
            Neon(vreinterpretq_f32_s32(i))
        }
        #[inline(always)]
        unsafe fn reduce_add(self) -> f32 {
            vaddvq_f32(self.0)
        }
    }
}

/// Orders earlier non-temporal stores before later stores (and so before the atomics
/// that hand the data to another thread). A no-op where [`Vf32::store_stream`] is a
/// plain store.
#[inline]
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
}

/// Defines `pub(crate) fn $name(level, args...)` that runs the generic kernel
/// `$generic::<V>` compiled for the ISA of `level`.
///
/// `level` must come from [`crate::simd::level`] (which only returns levels the CPU
/// supports); that is what makes the `unsafe` calls below sound.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(level: $crate::simd::SimdLevel, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[cfg_attr(not(feature = "emulate-avx512"), target_feature(enable = "avx512f"))]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::vec::Avx512>($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::vec::Avx2>($($arg),*) }
            }
            #[cfg(target_arch = "aarch64")]
            #[target_feature(enable = "neon")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn neon($($arg: $ty),*) $(-> $ret)? {
                unsafe { $generic::<$crate::vec::Neon>($($arg),*) }
            }
            match level {
                // SAFETY: `level` comes from `simd::level()`, which only returns levels
                // the running CPU supports.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::SimdLevel::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::simd::SimdLevel::Avx2 => unsafe { avx2($($arg),*) },
                #[cfg(target_arch = "aarch64")]
                $crate::simd::SimdLevel::Neon => unsafe { neon($($arg),*) },
                // SAFETY: the scalar instantiation uses no special instructions.
                _ => unsafe { $generic::<f32>($($arg),*) },
            }
        }
    };
}
pub(crate) use simd_dispatch;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{self, SimdLevel};

    #[inline(always)]
    unsafe fn map_k<V: Vf32>(x: &[f32], sig: bool, y: &mut [f32]) {
        let mut i = 0;
        while i + V::LANES <= x.len() {
            let v = V::load(x.as_ptr().add(i));
            (if sig { v.sigmoid() } else { v.exp() }).store(y.as_mut_ptr().add(i));
            i += V::LANES;
        }
        while i < x.len() {
            y[i] = if sig { <f32 as Vf32>::sigmoid(x[i]) } else { <f32 as Vf32>::exp(x[i]) };
            i += 1;
        }
    }
    simd_dispatch!(fn map(x: &[f32], sig: bool, y: &mut [f32]) => map_k);

    fn grid() -> Vec<f32> {
        (0..200_001).map(|i| -100.0 + i as f32 * 1e-3).collect()
    }

    /// The bound: sigmoid within 1e-6 absolute of the float64 result, everywhere.
    #[test]
    fn sigmoid_within_1e6_of_f64_on_every_level() {
        simd::for_each_level(|l: SimdLevel| {
            let x = grid();
            let mut y = vec![0.0; x.len()];
            map(l, &x, true, &mut y);
            for (a, b) in x.iter().zip(&y) {
                let want = 1.0 / (1.0 + (-(*a as f64)).exp());
                assert!((*b as f64 - want).abs() <= 1e-6, "{l:?} sigmoid({a}) = {b}, want {want}");
            }
        });
    }

    #[test]
    fn exp_relative_error_small_on_every_level() {
        simd::for_each_level(|l: SimdLevel| {
            let x: Vec<f32> = (0..170_001).map(|i| -85.0 + i as f32 * 1e-3).collect();
            let mut y = vec![0.0; x.len()];
            map(l, &x, false, &mut y);
            for (a, b) in x.iter().zip(&y) {
                let want = (*a as f64).exp();
                assert!(((*b as f64 - want) / want).abs() <= 5e-7, "{l:?} exp({a}) = {b}, want {want}");
            }
            // Clamped, finite at the extremes.
            let ext = [-1e30f32, -200.0, 200.0, 1e30];
            let mut ye = [0.0f32; 4];
            map(l, &ext, false, &mut ye);
            assert!(ye.iter().all(|v| v.is_finite()), "{l:?} {ye:?}");
        });
    }
}

/// The `emulate-avx512` stand-in against real hardware: every lane-wise operation of the
/// emulated 16-lane type gives, bit for bit, what the AVX2 intrinsics (the same
/// per-lane instructions as AVX-512F's, 8 lanes wide) give on the same inputs, including
/// NaN, ±0, ±inf, subnormals and rounding ties; `reduce_add` follows the documented
/// order of the real AVX-512 one (its two halves added, then AVX2's order).
#[cfg(all(test, target_arch = "x86_64", feature = "emulate-avx512"))]
mod emulation_tests {
    use super::*;

    fn inputs() -> Vec<f32> {
        let mut v = vec![0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, -2.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, 1e-40, -1e-40, f32::MAX, f32::MIN, 3.0, 1e-7];
        let mut s = 0x2545_f491_4f6c_dd1d_u64;
        while v.len() < 16 * 64 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            v.push(f32::from_bits(s as u32) % 1e6);
        }
        v
    }

    #[test]
    fn emulated_avx512_lanes_match_the_avx2_instructions_bitwise() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("skipped: no AVX2/FMA on this CPU");
            return;
        }
        /// Operation `op` of the test on `LANES` values at a, b, c, into out.
        #[inline(always)]
        unsafe fn apply<V: Vf32>(op: usize, a: *const f32, b: *const f32, c: *const f32, out: *mut f32) {
            let (x, y, z) = (V::load(a), V::load(b), V::load(c));
            let r = match op {
                0 => x.add(y),
                1 => x.sub(y),
                2 => x.mul(y),
                3 => x.div(y),
                4 => x.mul_add(y, z),
                5 => x.max(y),
                6 => x.min(y),
                _ => x.round(),
            };
            r.store(out)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn via_avx2(op: usize, a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
            for i in (0..16).step_by(8) {
                apply::<Avx2>(op, a.as_ptr().add(i), b.as_ptr().add(i), c.as_ptr().add(i), out.as_mut_ptr().add(i));
            }
        }
        let v = inputs();
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        // Operand triples: every ordered pair of the special values (the first 18
        // inputs) with a third from the list, then the random inputs against shifted
        // copies of themselves.
        let mut triples: Vec<(f32, f32, f32)> = Vec::new();
        for i in 0..18 {
            for j in 0..18 {
                triples.push((v[i], v[j], v[(i + 2 * j) % 18]));
            }
        }
        for i in 18..v.len() {
            triples.push((v[i], v[(i * 7 + 3) % v.len()], v[(i * 5 + 11) % v.len()]));
        }
        for ch in triples.chunks_exact(16) {
            let w: Vec<f32> = ch.iter().map(|t| t.0).collect();
            let b: Vec<f32> = ch.iter().map(|t| t.1).collect();
            let c: Vec<f32> = ch.iter().map(|t| t.2).collect();
            let w = &w[..];
            for op in 0..8 {
                let mut want = [0.0f32; 16];
                let mut got = [0.0f32; 16];
                // SAFETY: AVX2 and FMA checked above; 16 floats in every slice.
                unsafe {
                    via_avx2(op, w, &b, &c, &mut want);
                    apply::<Avx512>(op, w.as_ptr(), b.as_ptr(), c.as_ptr(), got.as_mut_ptr());
                }
                assert_eq!(bits(&got), bits(&want), "op {op}, inputs {w:?} / {b:?} / {c:?}");
            }
        }
        // pow2i on every exponent it takes, and the reduction order.
        let n: Vec<f32> = (-126..=127).map(|e| e as f32).collect();
        for ch in n.chunks(16) {
            let mut e = [0.0f32; 16];
            e[..ch.len()].copy_from_slice(ch);
            let mut got = [0.0f32; 16];
            // SAFETY: 16 floats each.
            unsafe { Avx512::pow2i(Avx512::load(e.as_ptr())).store(got.as_mut_ptr()) };
            for (x, g) in e.iter().zip(got) {
                assert_eq!(g, 2f32.powi(*x as i32), "2^{x}");
            }
        }
        let a: [f32; 16] = std::array::from_fn(|i| (i as f32 + 1.0) * 1.0e7 + 0.3 * i as f32);
        let u: [f32; 8] = std::array::from_fn(|i| a[i] + a[i + 8]);
        let want = ((u[0] + u[4]) + (u[2] + u[6])) + ((u[1] + u[5]) + (u[3] + u[7]));
        // SAFETY: 16 floats.
        let got = unsafe { Avx512::load(a.as_ptr()).reduce_add() };
        assert_eq!(got.to_bits(), want.to_bits());
    }
}
