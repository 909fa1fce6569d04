//! Element-wise and row-wise f32 operations of a transformer forward pass: normalisation,
//! softmax, activations and rotary position embeddings. They work on plain slices; shapes are
//! arguments. Loops are written so the compiler vectorises them (no gathers, no branches in
//! the inner loop); the quantized matmuls are where SIMD is hand-written.

/// `out = x / rms(x) * w` over one row (llama.cpp `ggml_rms_norm` followed by `ggml_mul`).
/// `w_offset` is added to every weight (Gemma stores `w` so that the scale is `1 + w` in the
/// original model; its GGUF converter already adds the 1, so llama and gemma3 GGUFs use 0).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len(), out.len());
    let scale = rms_scale(x, eps);
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * scale * wi;
    }
}

/// In-place `x = x / rms(x) * w`.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), w.len());
    let scale = rms_scale(x, eps);
    for (xi, &wi) in x.iter_mut().zip(w) {
        *xi *= scale * wi;
    }
}

fn rms_scale(x: &[f32], eps: f32) -> f32 {
    // Accumulate in 8 lanes so the compiler can vectorise the reduction; f64 at the end.
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i] * c[i];
        }
    }
    let mut sum: f64 = acc.iter().map(|&a| a as f64).sum();
    sum += rem.iter().map(|&a| (a as f64) * (a as f64)).sum::<f64>();
    let mean = sum / x.len().max(1) as f64;
    (1.0 / (mean + eps as f64).sqrt()) as f32
}

/// LayerNorm over one row: `out = (x - mean) / sqrt(var + eps) * w + b` (BERT-style).
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>()
        / n;
    let inv = (1.0 / (var + eps as f64).sqrt()) as f32;
    let mean = mean as f32;
    for (((o, &xi), &wi), &bi) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (xi - mean) * inv * wi + bi;
    }
}

/// Numerically stable in-place softmax; returns the log of the normaliser (logsumexp).
pub fn softmax_inplace(x: &mut [f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
    max + sum.ln()
}

/// `gate = silu(gate) * up` (SwiGLU).
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { swiglu_avx2(gate, up) };
    }
    swiglu_body(gate, up)
}

#[inline(always)]
fn swiglu_body(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = x / (1.0 + exp_fast(-x)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    swiglu_body(gate, up)
}

/// e^x in plain arithmetic that vectorises (relative error ~1e-7 over the f32 range):
/// x = n ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor polynomial, 2^n by the exponent
/// bits. Inputs are clamped to [-87, 88] (results to ~[1.6e-38, 1.6e38]).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    // r = x - n ln2, in two steps to keep the low bits of ln2 (Cody-Waite).
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// GELU, tanh approximation (ggml `ggml_gelu`, used by Gemma's `gelu_pytorch_tanh`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// GELU, exact erf form (BERT).
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// `gate = gelu_tanh(gate) * up` (GeGLU, Gemma). Uses 0.5 (1 + tanh u) = 1 / (1 + e^-2u).
pub fn geglu_inplace(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { geglu_avx2(gate, up) };
    }
    geglu_body(gate, up)
}

#[inline(always)]
fn geglu_body(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        let t = SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
        *g = x / (1.0 + exp_fast(-2.0 * t)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn geglu_avx2(gate: &mut [f32], up: &[f32]) {
    geglu_body(gate, up)
}

/// erf with max error ~1.5e-7 (Abramowitz-Stegun 7.1.26 is too coarse for golden tests;
/// this is the W. J. Cody rational approximation computed in f64).
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    // Numerical Recipes erfc approximation (fractional error < 1.2e-7).
    let y = t
        * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    let r = if x >= 0.0 { 1.0 - y } else { y - 1.0 };
    r as f32
}

/// Rotary embedding layout. `Norm` rotates adjacent pairs `(x[2i], x[2i+1])` (llama.cpp
/// `LLAMA_ROPE_TYPE_NORM`, used by the llama family, whose GGUF converter permutes Q/K);
/// `Neox` rotates `(x[i], x[i + n_dims/2])` (`LLAMA_ROPE_TYPE_NEOX`: gemma3, qwen2, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeKind {
    Norm,
    Neox,
}

/// Fill `cs` (length n_dims) with interleaved `(cos, sin)` of `pos * base^(-2i/n_dims)` for
/// i in 0..n_dims/2, scaled by `freq_scale` (linear position scaling).
pub fn rope_cos_sin(pos: usize, n_dims: usize, base: f32, freq_scale: f32, cs: &mut [f32]) {
    let half = n_dims / 2;
    debug_assert!(cs.len() >= 2 * half);
    let p = pos as f64 * freq_scale as f64;
    for i in 0..half {
        let theta = p * (base as f64).powf(-2.0 * i as f64 / n_dims as f64);
        let (s, c) = theta.sin_cos();
        cs[2 * i] = c as f32;
        cs[2 * i + 1] = s as f32;
    }
}

/// Apply a rotary embedding in place to one head vector `x` (length head_dim) with the table
/// from [`rope_cos_sin`]; dimensions past n_dims (= cs.len()) are left as they are.
pub fn rope_apply(x: &mut [f32], cs: &[f32], kind: RopeKind) {
    let half = cs.len() / 2;
    match kind {
        RopeKind::Norm => {
            for i in 0..half {
                let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                let (a, b) = (x[2 * i], x[2 * i + 1]);
                x[2 * i] = a * c - b * s;
                x[2 * i + 1] = a * s + b * c;
            }
        }
        RopeKind::Neox => {
            for i in 0..half {
                let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                let (a, b) = (x[i], x[i + half]);
                x[i] = a * c - b * s;
                x[i + half] = a * s + b * c;
            }
        }
    }
}

// The two inner loops of attention, `dot_f32` and `axpy`, are written once as plain code and
// compiled twice: for the baseline target and, on x86-64, with AVX2+FMA enabled (chosen at run
// time). `f32::mul_add` is only used where FMA is enabled: without it, it becomes a libm call.

macro_rules! dot_body {
    ($a:expr, $b:expr, $fma:expr) => {{
        let (a, b) = ($a, $b);
        let mut acc = [0f32; 16];
        let ca = a.chunks_exact(16);
        let cb = b.chunks_exact(16);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..16 {
                acc[i] = $fma(x[i], y[i], acc[i]);
            }
        }
        let mut s = 0f32;
        for (x, y) in ra.iter().zip(rb) {
            s += x * y;
        }
        acc.iter().sum::<f32>() + s
    }};
}

macro_rules! axpy_body {
    ($alpha:expr, $x:expr, $y:expr, $fma:expr) => {{
        let (alpha, x, y) = ($alpha, $x, $y);
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = $fma(alpha, xi, *yi);
        }
    }};
}

#[inline(always)]
fn mul_add_plain(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn mul_add_fused(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_body!(a, b, mul_add_fused)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_body!(alpha, x, y, mul_add_fused)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// f32 dot product (16 independent accumulators; AVX2+FMA when the CPU has them).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { dot_f32_avx2(a, b) };
    }
    dot_body!(a, b, mul_add_plain)
}

/// `y += alpha * x` (AVX2+FMA when the CPU has them).
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { axpy_avx2(alpha, x, y) };
    }
    axpy_body!(alpha, x, y, mul_add_plain)
}

// --- f16 operands (the KV cache is stored in f16, as llama.cpp's default) ---

use half::f16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_f16_avx2(a: &[f32], b: &[f16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n bounds both slices; unaligned loads.
        unsafe {
            let x0 = _mm256_loadu_ps(a.as_ptr().add(i));
            let x1 = _mm256_loadu_ps(a.as_ptr().add(i + 8));
            let y0 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i));
            let y1 = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i + 8) as *const __m128i));
            acc0 = _mm256_fmadd_ps(x0, y0, acc0);
            acc1 = _mm256_fmadd_ps(x1, y1, acc1);
        }
        i += 16;
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let hi = _mm256_extractf128_ps(acc, 1);
    let lo = _mm256_castps256_ps128(acc);
    let s4 = _mm_add_ps(hi, lo);
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    let mut s = _mm_cvtss_f32(s1);
    while i < n {
        s += a[i] * b[i].to_f32();
        i += 1;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_f16_avx2(alpha: f32, x: &[f16], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len().min(y.len());
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n bounds both slices; unaligned loads and stores.
        unsafe {
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
            let yp = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(yp, _mm256_fmadd_ps(va, xv, _mm256_loadu_ps(yp)));
        }
        i += 8;
    }
    while i < n {
        y[i] += alpha * x[i].to_f32();
        i += 1;
    }
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| has_avx2_fma() && is_x86_feature_detected!("f16c"))
}

/// Dot product of f32 `a` with f16 `b`.
#[inline]
pub fn dot_f32_f16(a: &[f32], b: &[f16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
        return unsafe { dot_f32_f16_avx2(a, b) };
    }
    a.iter().zip(b).map(|(&x, &y)| x * y.to_f32()).sum()
}

/// `y += alpha * x` with f16 `x`.
#[inline]
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
        return unsafe { axpy_f16_avx2(alpha, x, y) };
    }
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi.to_f32();
    }
}

/// Round every value to the nearest f16 and back (llama.cpp converts activations that meet an
/// f16 operand to f16 first; doing the same keeps results close to it).
pub fn round_to_f16(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = f16::from_f32(*v).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1.0];
        let lse = softmax_inplace(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let expect = (1f32.exp() + 2f32.exp() + 3f32.exp() + (-1f32).exp()).ln();
        assert!((lse - expect).abs() < 1e-5);
    }

    #[test]
    fn rms_norm_unit() {
        let x = [3.0f32, 4.0];
        let mut o = [0f32; 2];
        rms_norm(&x, &[1.0, 1.0], 0.0, &mut o);
        let rms = (12.5f32).sqrt();
        assert!((o[0] - 3.0 / rms).abs() < 1e-6 && (o[1] - 4.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn rope_kinds_rotate_the_right_pairs() {
        let mut cs = vec![0f32; 4];
        rope_cos_sin(1, 4, 10000.0, 1.0, &mut cs);
        let mut a = [1.0f32, 0.0, 1.0, 0.0];
        rope_apply(&mut a, &cs, RopeKind::Norm);
        assert!((a[0] - 1f32.cos()).abs() < 1e-6 && (a[1] - 1f32.sin()).abs() < 1e-6);
        let mut b = [1.0f32, 1.0, 0.0, 0.0];
        rope_apply(&mut b, &cs, RopeKind::Neox);
        assert!((b[0] - 1f32.cos()).abs() < 1e-6 && (b[2] - 1f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, e) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erf(x) - e).abs() < 1e-6, "erf({x})");
        }
    }

    #[test]
    fn f16_ops_match_scalar() {
        let a: Vec<f32> = (0..45).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f16> = (0..45)
            .map(|i| f16::from_f32((i as f32 * 0.11).cos()))
            .collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y.to_f32()).sum();
        assert!((dot_f32_f16(&a, &b) - naive).abs() < 1e-4);
        let mut y = a.clone();
        axpy_f16(0.5, &b, &mut y);
        for i in 0..45 {
            assert!((y[i] - (a[i] + 0.5 * b[i].to_f32())).abs() < 1e-6);
        }
    }

    #[test]
    fn exp_fast_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let e = (x as f64).exp();
            worst = worst.max(((exp_fast(x) as f64) - e).abs() / e);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "max relative error {worst}");
        assert!(exp_fast(-200.0) < 1e-37);
        assert!(exp_fast(200.0).is_finite());
    }

    #[test]
    fn fused_activations_match_the_definitions() {
        let xs: Vec<f32> = (-400..400).map(|i| i as f32 * 0.031).collect();
        let up: Vec<f32> = xs.iter().map(|x| 1.0 + 0.1 * x).collect();
        let mut g = xs.clone();
        geglu_inplace(&mut g, &up);
        let mut s = xs.clone();
        swiglu_inplace(&mut s, &up);
        for i in 0..xs.len() {
            let x = xs[i] as f64;
            let gelu = 0.5 * x * (1.0 + (0.797_884_560_8 * (x + 0.044_715 * x * x * x)).tanh());
            let silu = x / (1.0 + (-x).exp());
            let u = up[i] as f64;
            assert!(
                (g[i] as f64 - gelu * u).abs() <= 1e-5 * (1.0 + (gelu * u).abs()),
                "gelu {x}"
            );
            assert!(
                (s[i] as f64 - silu * u).abs() <= 1e-5 * (1.0 + (silu * u).abs()),
                "silu {x}"
            );
        }
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_f32(&a, &b) - naive).abs() < 1e-3);
    }
}
