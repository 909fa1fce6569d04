//! Runtime instruction-set selection and the per-(ISA, format) kernel dispatch tables.
//!
//! The CPU is probed once ([`detected`]); [`active`] additionally honours `HOLOGRAM_ISA`
//! (`scalar|avx2|avx512|neon`) so tests and CI can run every path on one machine. Kernels are
//! `#[target_feature]` functions in `x86_avx2.rs` / `x86_avx512.rs` (same names in each file);
//! `scalar` is `crate::quant::*` (the references). The tables return `unsafe fn` pointers whose
//! contract is: the ISA was checked with [`Isa::is_available`], and the slice lengths match
//! (whole blocks, activation row as long as the weight row) — checked by the public API in
//! `crate::matmul` and only `debug_assert!`ed here.
//!
//! Tiers: `Avx2` = AVX2+FMA+F16C. `Avx512` = AVX-512 F/BW/VL **with VNNI** (`vpdpbusd`) plus the
//! AVX2 tier; AVX-512 CPUs without VNNI (Skylake-SP only) use `Avx2`.
//!
//! The AVX-512 tier is chosen automatically when the CPU has those features (verified by the
//! kernel and golden tests on an AVX-512 machine); `HOLOGRAM_ISA=avx2` forces the AVX2 tier
//! (and 8-row packed panels), `HOLOGRAM_ISA=scalar` the references. `Neon` currently routes to
//! the scalar references (compiles everywhere; dedicated NEON kernels are a follow-up).

use std::sync::OnceLock;

use crate::quant::{self, QuantType};

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2_float;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2_kquants;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;

/// A kernel instruction-set tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parse a name as printed by [`Isa::name`] (case-insensitive; "generic" = scalar).
    pub fn from_name(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "generic" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            "neon" => Some(Isa::Neon),
            _ => None,
        }
    }

    /// Whether this CPU (and build target) can run this tier.
    pub fn is_available(self) -> bool {
        available_mask() & (1 << self as u32) != 0
    }
}

fn probe() -> u32 {
    let mut m = 1 << Isa::Scalar as u32;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as f;
        let avx2 = f!("avx2") && f!("fma") && f!("f16c");
        if avx2 {
            m |= 1 << Isa::Avx2 as u32;
            // Opt-in only (see the module docs).
            if f!("avx512f") && f!("avx512bw") && f!("avx512vl") && f!("avx512vnni") {
                m |= 1 << Isa::Avx512 as u32;
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            m |= 1 << Isa::Neon as u32;
        }
    }
    m
}

fn available_mask() -> u32 {
    static MASK: OnceLock<u32> = OnceLock::new();
    *MASK.get_or_init(probe)
}

/// The best tier this CPU supports.
pub fn detected() -> Isa {
    [Isa::Avx512, Isa::Avx2, Isa::Neon]
        .into_iter()
        .find(|i| i.is_available())
        .unwrap_or(Isa::Scalar)
}

/// The tier kernels use by default: `HOLOGRAM_ISA` if set to an available tier, else
/// [`detected`]. Read once per process.
pub fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        std::env::var("HOLOGRAM_ISA")
            .ok()
            .and_then(|s| Isa::from_name(&s))
            .filter(|i| i.is_available())
            .unwrap_or_else(detected)
    })
}

/// Every tier this CPU can run, scalar first.
pub fn available() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

/// Ask for the 64-byte line holding `p` to be brought into L2 (a hint: nothing happens on
/// targets without a prefetch instruction, and it never faults, whatever the address).
#[inline(always)]
pub fn prefetch_l2(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64; a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetch into L2 the `lines` 64-byte lines from `p` ([`prefetch_l2`] on each).
#[inline(always)]
pub fn prefetch_lines_l2(p: *const u8, lines: usize) {
    for l in 0..lines {
        prefetch_l2(p.wrapping_add(l * 64));
    }
}

/// `src` (whole blocks) -> `dst` (block_size * n_blocks floats).
pub(crate) type DequantFn = unsafe fn(&[u8], &mut [f32]);
/// Dot of one weight row with one activation row in the weight type's `vec_dot_type`.
pub(crate) type VecDotFn = unsafe fn(&[u8], &[u8]) -> f32;
/// f32 row (multiple of 32) -> activation blocks.
pub(crate) type QuantizeFn = unsafe fn(&[f32], &mut [u8]);

/// Dequantization kernel for `(isa, t)`; None if `t` has none.
pub(crate) fn dequant_fn(isa: Isa, t: QuantType) -> Option<DequantFn> {
    use QuantType as T;
    #[cfg(target_arch = "x86_64")]
    {
        let k = match isa {
            Isa::Avx2 => x86_avx2::dequant_fn(t),
            Isa::Avx512 => x86_avx512::dequant_fn(t),
            _ => None,
        };
        if k.is_some() {
            return k;
        }
        // K-quants: one AVX2 implementation, also used by the AVX-512 tier (a superset).
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            if let Some(k) = x86_avx2_kquants::dequant_fn(t) {
                return Some(k);
            }
        }
    }
    let _ = isa;
    Some(match t {
        T::F32 => quant::fp32::dequantize,
        T::F16 => quant::fp16::dequantize,
        T::BF16 => quant::bf16::dequantize,
        T::Q4_0 => quant::q4_0::dequantize,
        T::Q4_1 => quant::q4_1::dequantize,
        T::Q5_0 => quant::q5_0::dequantize,
        T::Q5_1 => quant::q5_1::dequantize,
        T::Q8_0 => quant::q8_0::dequantize,
        T::Q8_1 => quant::q8_1::dequantize,
        T::Q2_K => quant::q2_k::dequantize,
        T::Q3_K => quant::q3_k::dequantize,
        T::Q4_K => quant::q4_k::dequantize,
        T::Q5_K => quant::q5_k::dequantize,
        T::Q6_K => quant::q6_k::dequantize,
        _ => return None,
    })
}

/// Dot kernel of weight type `t` against its `vec_dot_type`; None if `t` has none.
pub(crate) fn vec_dot_fn(isa: Isa, t: QuantType) -> Option<VecDotFn> {
    use QuantType as T;
    #[cfg(target_arch = "x86_64")]
    {
        let k = match isa {
            Isa::Avx2 => x86_avx2::vec_dot_fn(t),
            Isa::Avx512 => x86_avx512::vec_dot_fn(t),
            _ => None,
        };
        if k.is_some() {
            return k;
        }
        // K-quants: one AVX2 implementation, also used by the AVX-512 tier (a superset).
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            if let Some(k) = x86_avx2_kquants::vec_dot_fn(t) {
                return Some(k);
            }
        }
    }
    let _ = isa;
    Some(match t {
        T::F32 => quant::fp32::vec_dot,
        T::F16 => quant::fp16::vec_dot,
        T::BF16 => quant::bf16::vec_dot,
        T::Q4_0 => quant::q4_0::vec_dot,
        T::Q4_1 => quant::q4_1::vec_dot,
        T::Q5_0 => quant::q5_0::vec_dot,
        T::Q5_1 => quant::q5_1::vec_dot,
        T::Q8_0 => quant::q8_0::vec_dot,
        T::Q2_K => quant::q2_k::vec_dot,
        T::Q3_K => quant::q3_k::vec_dot,
        T::Q4_K => quant::q4_k::vec_dot,
        T::Q5_K => quant::q5_k::vec_dot,
        T::Q6_K => quant::q6_k::vec_dot,
        _ => return None,
    })
}

/// Activation quantizer producing `vt` (Q8_0, Q8_1 or Q8_K); None for other types.
pub(crate) fn quantize_fn(isa: Isa, vt: QuantType) -> Option<QuantizeFn> {
    #[cfg(target_arch = "x86_64")]
    {
        let k = match isa {
            Isa::Avx2 => x86_avx2::quantize_fn(vt),
            Isa::Avx512 => x86_avx512::quantize_fn(vt),
            _ => None,
        };
        if k.is_some() {
            return k;
        }
        // K-quants: one AVX2 implementation, also used by the AVX-512 tier (a superset).
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            if let Some(k) = x86_avx2_kquants::quantize_fn(vt) {
                return Some(k);
            }
        }
    }
    let _ = isa;
    Some(match vt {
        QuantType::Q8_0 => quant::q8_0::quantize,
        QuantType::Q8_1 => quant::q8_1::quantize,
        QuantType::Q8_K => quant::q8_k::quantize,
        _ => return None,
    })
}
