//! Instruction-set selection, decided once at runtime.
//!
//! The best level the CPU supports is detected on first use. It can be lowered (never
//! raised past what the CPU supports) with the `SENET_SIMD` environment variable or
//! [`set_level`], so that every kernel variant can be tested on one AVX-512 machine.
//! On a CPU without AVX-512, the `emulate-avx512` feature (tests only, see `vec.rs`)
//! makes the AVX-512 level available with a portable vector type, so its kernels are
//! tested there too; the default level then stays the widest real one.

use std::sync::atomic::{AtomicU8, Ordering};

/// A family of kernels, ordered from the most portable to the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Plain Rust loops; the reference every other level is tested against.
    Scalar = 1,
    /// aarch64 Advanced SIMD, 4 lanes.
    Neon = 2,
    /// x86_64 AVX2 + FMA, 8 lanes.
    Avx2 = 3,
    /// x86_64 AVX-512F, 16 lanes.
    Avx512 = 4,
}

impl SimdLevel {
    /// The name used by `SENET_SIMD`, `simdLevel()` and `setSimdLevel()`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Parses a level name (case-insensitive).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdLevel::Scalar),
            "neon" => Some(SimdLevel::Neon),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> SimdLevel {
        match v {
            2 => SimdLevel::Neon,
            3 => SimdLevel::Avx2,
            4 => SimdLevel::Avx512,
            _ => SimdLevel::Scalar,
        }
    }

    /// Whether the running CPU can execute this level's kernels.
    pub fn is_supported(self) -> bool {
        supported_levels().contains(&self)
    }
}

/// Every level the running CPU can execute, most portable first.
pub fn supported_levels() -> Vec<SimdLevel> {
    let mut v = vec![SimdLevel::Scalar];
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            v.push(SimdLevel::Neon);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(SimdLevel::Avx2);
            // With the `emulate-avx512` feature (tests only) the AVX-512 level's vector
            // type is portable code (`vec.rs`), so the level runs on any CPU.
            if is_x86_feature_detected!("avx512f") || cfg!(feature = "emulate-avx512") {
                v.push(SimdLevel::Avx512);
            }
        }
    }
    v
}

/// The widest level the CPU supports (with the `emulate-avx512` feature, the widest
/// but the emulated AVX-512 one, which tests select explicitly).
pub fn best_supported() -> SimdLevel {
    let v = supported_levels();
    let usable = v.iter().rev().find(|&&l| !(cfg!(feature = "emulate-avx512") && l == SimdLevel::Avx512));
    *usable.unwrap_or(&SimdLevel::Scalar)
}

// 0 = not decided yet.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level kernels use now: the best supported one, lowered by `SENET_SIMD` (read on
/// first use) or by [`set_level`].
pub fn level() -> SimdLevel {
    let v = LEVEL.load(Ordering::Relaxed);
    if v != 0 {
        return SimdLevel::from_u8(v);
    }
    let best = best_supported();
    let chosen = match std::env::var("SENET_SIMD").ok().and_then(|s| SimdLevel::parse(&s)) {
        // An unsupported request falls back to the best level the CPU has: the env var
        // can lower the level, never make the process execute illegal instructions.
        Some(req) if req.is_supported() => req,
        _ => best,
    };
    LEVEL.store(chosen as u8, Ordering::Relaxed);
    chosen
}

/// Forces a level. Errors (and changes nothing) when the CPU cannot execute it.
pub fn set_level(l: SimdLevel) -> Result<(), String> {
    if !l.is_supported() {
        let names: Vec<&str> = supported_levels().iter().map(|l| l.name()).collect();
        return Err(format!(
            "SIMD level '{}' is not supported by this CPU (supported: {})",
            l.name(),
            names.join(", ")
        ));
    }
    LEVEL.store(l as u8, Ordering::Relaxed);
    Ok(())
}

/// Runs `f` once for every supported level, restoring the previous level afterwards.
/// For tests: the same assertions then cover every kernel variant.
pub fn for_each_level(mut f: impl FnMut(SimdLevel)) {
    let _guard = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let prev = level();
    for l in supported_levels() {
        set_level(l).expect("supported");
        f(l);
    }
    set_level(prev).expect("supported");
}

/// Serializes tests that change the process-wide level or thread count.
pub static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
