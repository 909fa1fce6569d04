//! AVX2 + FMA + F16C kernels for the K-quants (x86-64): Q8_K activation quantization, the
//! `qX_K x q8_K` dots and the Q4_K / Q6_K dequantization. Also used by the AVX-512 tier (which
//! includes AVX2). Q2_K / Q3_K / Q5_K dequantization stays scalar (not on a hot path).
//!
//! Dots follow the scheme of ggml `arch/x86/quants.c`: the unsigned quants of a sub-block go
//! through `vpmaddubsw` against the int8 activations (u8 x i8 -> i16 pairs; no saturation since
//! |y| <= 127 and q <= 63), `vpmaddwd` with the sub-block scales (-> i32), an exact i32 sum per
//! super-block and one FMA with `d * y.d`. Zero points are folded in with `bsums`: the min terms
//! of Q2_K / Q4_K / Q5_K and the `-32` of Q6_K. The integer sums equal the scalar references'
//! exactly; only the f32 accumulation order differs.
//!
//! Dequantization does exactly the reference's f32 operations (`(d * sc) * q - (dmin * m)`,
//! mul then sub, never FMA), so it is bit-exact.
//!
//! Every kernel here is `unsafe`: callers guarantee AVX2+FMA+F16C (checked via
//! `Isa::Avx2.is_available()`) and whole-block slice lengths (debug-asserted).

use std::arch::x86_64::*;

use super::{DequantFn, QuantizeFn, VecDotFn};
use crate::quant::{q4_k, q8_k, QuantType, QK_K};

/// Bytes of a Q8_K block; `d` (f32) at 0, `qs` at 4, `bsums` (16 x i16) at 260.
const Y_BYTES: usize = q8_k::BYTES;
const Y_QS: usize = 4;
const Y_BSUMS: usize = 260;

/// The two f16 at `p` and `p + 2` as f32 (`d`, `dmin`). One 32-bit load and `vmovd`, which
/// writes the whole register: a 16-bit insert would carry a false dependency on whatever the
/// register held (LLVM picks the accumulator), serializing the block loop.
///
/// # Safety
/// `p..p+4` readable; F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x2_at(p: *const u8) -> (f32, f32) {
    // SAFETY: the caller guarantees four readable bytes at p.
    let bits = unsafe { p.cast::<u32>().read_unaligned() };
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The f16 at `p` as f32, read as the high half of the 32 bits at `p - 2` (see [`f16x2_at`]).
///
/// # Safety
/// `p-2..p+2` readable; F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at_hi(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees p-2..p+2 readable.
    unsafe { f16x2_at(p.sub(2)).1 }
}

/// f32 at `p`.
///
/// # Safety
/// `p..p+4` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees four readable bytes at p.
    unsafe { p.cast::<f32>().read_unaligned() }
}

/// 32 bytes at `p`.
///
/// # Safety
/// `p..p+32` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes at p.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `vpshufb` mask broadcasting i16 lane `a` of each 128-bit half into the low half and lane `b`
/// into the high half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast_mask(a: i32, b: i32) -> __m256i {
    let w = |i: i32| (((2 * i + 1) << 8) | (2 * i)) as i16;
    _mm256_set_m128i(_mm_set1_epi16(w(b)), _mm_set1_epi16(w(a)))
}

/// Sum of u8 `q` x i8 `y` over 16-byte halves, weighted by i16 scales `s` (one scale per
/// 128-bit half, broadcast): 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scaled_dot(q: __m256i, y: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(s, _mm256_maddubs_epi16(q, y))
}

// ---------------------------------------------------------------------------------------------
// Q8_K activations

/// Quantize f32 activations to Q8_K, byte-identical to `quant::q8_k::quantize` for every input
/// (first maximal |x| picked as the reference does; NaN skipped by the max; conversions with
/// `cvtps2dq` semantics mirrored by `q8_k::round_q8`).
///
/// # Safety
/// AVX2+FMA+F16C; `x.len()` multiple of 256, `dst` 292 bytes per 256 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
    let nb = x.len() / QK_K;
    debug_assert_eq!(dst.len(), nb * Y_BYTES);
    let sign = _mm256_set1_ps(-0.0);
    let zero = _mm256_setzero_si256();
    for (xb, out) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(Y_BYTES)) {
        let p = xb.as_ptr();
        // SAFETY: (all loads below) xb has 256 floats; offsets are 8k for k < 32.
        let ld = |k: usize| unsafe { _mm256_loadu_ps(p.add(8 * k)) };
        // max_ps(a, m) returns m when a is NaN: NaN never becomes the max (as `ax > amax`).
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            m = _mm256_max_ps(_mm256_andnot_ps(sign, ld(k)), m);
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        out.fill(0);
        if amax == 0.0 {
            continue;
        }
        // The first element with |x| == amax carries the sign (ggml takes the first maximum).
        let av = _mm256_set1_ps(amax);
        let mut max = amax;
        for k in 0..QK_K / 8 {
            let eq = _mm256_cmp_ps(_mm256_andnot_ps(sign, ld(k)), av, _CMP_EQ_OQ);
            let mask = _mm256_movemask_ps(eq);
            if mask != 0 {
                max = xb[8 * k + mask.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let iv = _mm256_set1_ps(iscale);
        let c127 = _mm256_set1_epi32(127);
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut bsums = [0i16; QK_K / 16];
        for g in 0..QK_K / 32 {
            let q: [__m256i; 4] = core::array::from_fn(|k| {
                let v = _mm256_cvtps_epi32(_mm256_mul_ps(iv, ld(4 * g + k)));
                _mm256_min_epi32(v, c127)
            });
            let i0 = _mm256_packs_epi32(q[0], q[1]);
            let i2 = _mm256_packs_epi32(q[2], q[3]);
            let b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i0, i2), perm);
            // SAFETY: out has 292 bytes; the 32 quants of group g go at 4 + 32g .. 36 + 32g.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(Y_QS + 32 * g).cast(), b) };
            // Sums of 8 bytes per 64-bit lane of (q + 128), minus 8 * 128 each.
            let s = _mm256_sad_epu8(_mm256_xor_si256(b, _mm256_set1_epi8(-128)), zero);
            let mut l = [0u64; 4];
            // SAFETY: l has room for one 256-bit store.
            unsafe { _mm256_storeu_si256(l.as_mut_ptr().cast(), s) };
            bsums[2 * g] = (l[0] + l[1]) as i16 - 2048;
            bsums[2 * g + 1] = (l[2] + l[3]) as i16 - 2048;
        }
        out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (o, s) in out[Y_BSUMS..].chunks_exact_mut(2).zip(bsums) {
            o.copy_from_slice(&s.to_le_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_K / Q5_K

/// The 8 scales (i16 lanes 0..8) and 8 mins (lanes 8..16) of a Q4_K / Q5_K block.
///
/// # Safety
/// `p..p+12` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_mins_k4(p: *const u8) -> __m256i {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    // SAFETY: the caller guarantees 12 readable bytes.
    let u = unsafe {
        [
            p.cast::<u32>().read_unaligned(),
            p.add(4).cast::<u32>().read_unaligned(),
            p.add(8).cast::<u32>().read_unaligned(),
        ]
    };
    let sc_lo = u[0] & KMASK1;
    let sc_hi = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
    let m_lo = u[1] & KMASK1;
    let m_hi = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
    _mm256_cvtepu8_epi16(_mm_set_epi32(
        m_hi as i32,
        m_lo as i32,
        sc_hi as i32,
        sc_lo as i32,
    ))
}

/// Min term of a Q4_K / Q5_K block: 4 i32 lanes summing to `sum_j m[j] * (bsums[2j] +
/// bsums[2j+1])`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn min_term_k4(mins_scales: __m256i, bsums: __m256i) -> __m128i {
    let pairs = _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256(bsums, 1),
    );
    _mm_madd_epi16(_mm256_extracti128_si256(mins_scales, 1), pairs)
}

/// Dot of a Q4_K row with Q8_K activations.
///
/// # Safety
/// AVX2+FMA+F16C; `w` whole Q4_K blocks; `x` the same number of Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q4_k(w: &[u8], x: &[u8]) -> f32 {
    let nb = w.len() / 144;
    debug_assert_eq!(w.len(), nb * 144);
    debug_assert_eq!(x.len(), nb * Y_BYTES);
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: i < nb: block i of w (144 bytes) and of x (292 bytes) are in bounds; all
        // offsets below are inside those blocks (d 0, dmin 2, scales 4..16, qs 16..144; y.d 0,
        // y.qs 4..260, y.bsums 260..292).
        unsafe {
            let bw = w.as_ptr().add(i * 144);
            let bx = x.as_ptr().add(i * Y_BYTES);
            let yd = f32_at(bx);
            let (wd, wmin) = f16x2_at(bw);
            let ms = scales_mins_k4(bw.add(4));
            let mt = min_term_k4(ms, load(bx.add(Y_BSUMS)));
            let sc = _mm256_castsi256_si128(ms);
            let scales = _mm256_set_m128i(sc, sc);
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q = load(bw.add(16 + 32 * j));
                let ql = _mm256_and_si256(q, m4);
                let qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                let sl = _mm256_shuffle_epi8(scales, bcast_mask(2 * j as i32, 2 * j as i32));
                let sh =
                    _mm256_shuffle_epi8(scales, bcast_mask(2 * j as i32 + 1, 2 * j as i32 + 1));
                let pl = scaled_dot(ql, load(bx.add(Y_QS + 64 * j)), sl);
                let ph = scaled_dot(qh, load(bx.add(Y_QS + 64 * j + 32)), sh);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
            }
            // Exactly the f32 operations of the tiled kernel (`ktile`) for one (row, token),
            // so a token's result does not depend on the batch it is in: scale, then the min
            // term (4 lanes; the upper 4 add zero) into the same accumulator.
            let mt = _mm256_set_m128i(_mm_setzero_si128(), mt);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(wd * yd), _mm256_cvtepi32_ps(sumi), acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(-wmin * yd), _mm256_cvtepi32_ps(mt), acc);
        }
    }
    hsum_ps(acc)
}

/// Dot of a Q5_K row with Q8_K activations.
///
/// # Safety
/// AVX2+FMA+F16C; `w` whole Q5_K blocks; `x` the same number of Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q5_k(w: &[u8], x: &[u8]) -> f32 {
    let nb = w.len() / 176;
    debug_assert_eq!(w.len(), nb * 176);
    debug_assert_eq!(x.len(), nb * Y_BYTES);
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for i in 0..nb {
        // SAFETY: i < nb: block i of w (176 bytes) and of x (292 bytes) are in bounds; offsets
        // are inside them (d 0, dmin 2, scales 4..16, qh 16..48, qs 48..176).
        unsafe {
            let bw = w.as_ptr().add(i * 176);
            let bx = x.as_ptr().add(i * Y_BYTES);
            let yd = f32_at(bx);
            let (wd, wmin) = f16x2_at(bw);
            let (d, dmin) = (yd * wd, -yd * wmin);
            let ms = scales_mins_k4(bw.add(4));
            let mt = min_term_k4(ms, load(bx.add(Y_BSUMS)));
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mt), acc_m);
            let sc = _mm256_castsi256_si128(ms);
            let scales = _mm256_set_m128i(sc, sc);
            let hbits = load(bw.add(16));
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let q = load(bw.add(48 + 32 * j));
                let hl = _mm256_and_si256(
                    _mm256_srl_epi16(hbits, _mm_cvtsi32_si128((2 * j) as i32)),
                    one,
                );
                let hh = _mm256_and_si256(
                    _mm256_srl_epi16(hbits, _mm_cvtsi32_si128((2 * j + 1) as i32)),
                    one,
                );
                let ql = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16(hl, 4));
                let qh = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                    _mm256_slli_epi16(hh, 4),
                );
                let sl = _mm256_shuffle_epi8(scales, bcast_mask(2 * j as i32, 2 * j as i32));
                let sh =
                    _mm256_shuffle_epi8(scales, bcast_mask(2 * j as i32 + 1, 2 * j as i32 + 1));
                let pl = scaled_dot(ql, load(bx.add(Y_QS + 64 * j)), sl);
                let ph = scaled_dot(qh, load(bx.add(Y_QS + 64 * j + 32)), sh);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
    }
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    let m = _mm_add_ss(m, _mm_movehdup_ps(m));
    hsum_ps(acc) + _mm_cvtss_f32(m)
}

// ---------------------------------------------------------------------------------------------
// Q6_K

/// The four 32-value vectors (unsigned 0..=63) of half `h` of a Q6_K block at `bw`: elements
/// `128h + 32k .. 128h + 32k + 32` for k = 0..4.
///
/// # Safety
/// `bw` points at a whole Q6_K block; h < 2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_half(bw: *const u8, h: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(3);
    // SAFETY: ql 64h..64h+64 and qh 128+32h..160+32h lie inside the 210-byte block.
    let (l0, l1, hb) = unsafe {
        (
            load(bw.add(64 * h)),
            load(bw.add(64 * h + 32)),
            load(bw.add(128 + 32 * h)),
        )
    };
    let hi = |s: i32| match s {
        0 => _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4),
        1 => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4),
        2 => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4),
        _ => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4),
    };
    [
        _mm256_or_si256(_mm256_and_si256(l0, m4), hi(0)),
        _mm256_or_si256(_mm256_and_si256(l1, m4), hi(1)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), hi(2)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), hi(3)),
    ]
}

/// Dot of a Q6_K row with Q8_K activations. The `-32` offset is one `vpmaddwd` of the scales
/// with `bsums` per block.
///
/// # Safety
/// AVX2+FMA+F16C; `w` whole Q6_K blocks; `x` the same number of Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q6_k(w: &[u8], x: &[u8]) -> f32 {
    let nb = w.len() / 210;
    debug_assert_eq!(w.len(), nb * 210);
    debug_assert_eq!(x.len(), nb * Y_BYTES);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: i < nb: block i of w (210 bytes) and of x (292 bytes) are in bounds; offsets
        // are inside them (ql 0..128, qh 128..192, scales 192..208, d 208).
        unsafe {
            let bw = w.as_ptr().add(i * 210);
            let bx = x.as_ptr().add(i * Y_BYTES);
            let d = f32_at(bx) * f16_at_hi(bw.add(208));
            let sc8 = _mm_loadu_si128(bw.add(192).cast());
            let sc16 = _mm256_cvtepi8_epi16(sc8);
            // sum_j sc[j] * bsums[j] (8 lanes), times 32 below.
            let off = _mm256_madd_epi16(sc16, load(bx.add(Y_BSUMS)));
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let q = q6_half(bw, h);
                let s = if h == 0 {
                    _mm256_permute2x128_si256(sc16, sc16, 0x00)
                } else {
                    _mm256_permute2x128_si256(sc16, sc16, 0x11)
                };
                for (k, q) in q.into_iter().enumerate() {
                    let y = load(bx.add(Y_QS + 128 * h + 32 * k));
                    let m = bcast_mask(2 * k as i32, 2 * k as i32 + 1);
                    let p = scaled_dot(q, y, _mm256_shuffle_epi8(s, m));
                    sumi = _mm256_add_epi32(sumi, p);
                }
            }
            sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
    }
    hsum_ps(acc)
}

// ---------------------------------------------------------------------------------------------
// Q2_K / Q3_K

/// Dot of a Q2_K row with Q8_K activations.
///
/// # Safety
/// AVX2+FMA+F16C; `w` whole Q2_K blocks; `x` the same number of Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q2_k(w: &[u8], x: &[u8]) -> f32 {
    let nb = w.len() / 84;
    debug_assert_eq!(w.len(), nb * 84);
    debug_assert_eq!(x.len(), nb * Y_BYTES);
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: i < nb: block i of w (84 bytes) and of x (292 bytes) are in bounds; offsets
        // are inside them (scales 0..16, qs 16..80, d 80, dmin 82).
        unsafe {
            let bw = w.as_ptr().add(i * 84);
            let bx = x.as_ptr().add(i * Y_BYTES);
            let yd = f32_at(bx);
            let (wd, wmin) = f16x2_at(bw.add(80));
            let (d, dmin) = (yd * wd, -yd * wmin);
            let sm = _mm_loadu_si128(bw.cast());
            let sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(sm, m4));
            let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), m4));
            let mt = _mm256_madd_epi16(mins16, load(bx.add(Y_BSUMS)));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(mt), acc);
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let q2 = load(bw.add(16 + 32 * h));
                let s = if h == 0 {
                    _mm256_permute2x128_si256(sc16, sc16, 0x00)
                } else {
                    _mm256_permute2x128_si256(sc16, sc16, 0x11)
                };
                for k in 0..4 {
                    let q = _mm256_and_si256(_mm256_srl_epi16(q2, _mm_cvtsi32_si128(2 * k)), m3);
                    let y = load(bx.add(Y_QS + 128 * h + 32 * k as usize));
                    let m = bcast_mask(2 * k, 2 * k + 1);
                    let p = scaled_dot(q, y, _mm256_shuffle_epi8(s, m));
                    sumi = _mm256_add_epi32(sumi, p);
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
    }
    hsum_ps(acc)
}

/// Dot of a Q3_K row with Q8_K activations.
///
/// # Safety
/// AVX2+FMA+F16C; `w` whole Q3_K blocks; `x` the same number of Q8_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q3_k(w: &[u8], x: &[u8]) -> f32 {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let nb = w.len() / 110;
    debug_assert_eq!(w.len(), nb * 110);
    debug_assert_eq!(x.len(), nb * Y_BYTES);
    let m3 = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: i < nb: block i of w (110 bytes) and of x (292 bytes) are in bounds; offsets
        // are inside them (hmask 0..32, qs 32..96, scales 96..108, d 108).
        unsafe {
            let bw = w.as_ptr().add(i * 110);
            let bx = x.as_ptr().add(i * Y_BYTES);
            let d = f32_at(bx) * f16_at_hi(bw.add(108));
            let a = [
                bw.add(96).cast::<u32>().read_unaligned(),
                bw.add(100).cast::<u32>().read_unaligned(),
                bw.add(104).cast::<u32>().read_unaligned(),
            ];
            let sc8 = _mm_set_epi32(
                (((a[1] >> 4) & KMASK2) | (((a[2] >> 6) & KMASK1) << 4)) as i32,
                (((a[0] >> 4) & KMASK2) | (((a[2] >> 4) & KMASK1) << 4)) as i32,
                ((a[1] & KMASK2) | (((a[2] >> 2) & KMASK1) << 4)) as i32,
                ((a[0] & KMASK2) | ((a[2] & KMASK1) << 4)) as i32,
            );
            let sc16 = _mm256_cvtepi8_epi16(_mm_sub_epi8(sc8, _mm_set1_epi8(32)));
            // 1 where the high bit is clear (those values get -4).
            let nh = _mm256_xor_si256(load(bw), _mm256_set1_epi8(-1));
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let q3 = load(bw.add(32 + 32 * h));
                let s = if h == 0 {
                    _mm256_permute2x128_si256(sc16, sc16, 0x00)
                } else {
                    _mm256_permute2x128_si256(sc16, sc16, 0x11)
                };
                for k in 0..4 {
                    let bit = _mm_cvtsi32_si128(4 * h as i32 + k);
                    let ql = _mm256_and_si256(_mm256_srl_epi16(q3, _mm_cvtsi32_si128(2 * k)), m3);
                    let qh = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(nh, bit), one), 2);
                    let y = load(bx.add(Y_QS + 128 * h + 32 * k as usize));
                    let p16 =
                        _mm256_sub_epi16(_mm256_maddubs_epi16(ql, y), _mm256_maddubs_epi16(qh, y));
                    let m = bcast_mask(2 * k, 2 * k + 1);
                    let p = _mm256_madd_epi16(_mm256_shuffle_epi8(s, m), p16);
                    sumi = _mm256_add_epi32(sumi, p);
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
        }
    }
    hsum_ps(acc)
}

// ---------------------------------------------------------------------------------------------
// Register-tiled matmul (several tokens): Q4_K / Q6_K x Q8_K.
//
// A tile is one weight row x C <= KC tokens. Per super-block the row's sub-block scales are
// read once; per 32-value chunk the row's unsigned quants are unpacked once, the chunk's scale
// vector is shuffled once, and both are reused for the C tokens, whose Q8_K chunks are read
// straight from L1. Per (token, chunk) that is one `vpmaddubsw` + one `vpmaddwd` (scales) + one
// `vpaddd` into the token's i32 super-block sum: only C sums are live in the chunk loop, so
// they stay in registers (the f32 accumulators are touched once per super-block).
//
// Batch invariance: per (row, token) the tile does exactly the operations of the vec_dot
// (`vec_dot_q4_k` / `vec_dot_q6_k`, the one-token path): the same exact i32 lane sums per
// super-block, then the same f32 FMAs into one 8-lane accumulator (Q4_K: the scaled sum, then
// the min term from the activation `bsums`; Q6_K: the sum minus 32 x the scaled `bsums`), and
// the same horizontal sum. So a token's result does not depend on the batch it is in.

const KQ4: u32 = QuantType::Q4_K as u32;
const KQ6: u32 = QuantType::Q6_K as u32;

/// Most tokens per K-quant tile (C i32 sums + quants, scales, activations fit the 16 ymm).
const KC: usize = 8;
/// Target weight bytes of a row panel (kept L2-resident while all token groups pass over it).
const KPANEL_BYTES: usize = 96 * 1024;

/// `out[t * ldo + r] = dot(W[r], x[t])` for `r < nrows`, `t < n_tok`, Q8_K activations.
/// Args: w (nrows rows of `rb` bytes), rb, nrows, x (token t's `nb` Q8_K blocks at byte
/// `t * xstride`), xstride, n_tok, nb, out, ldo.
pub(crate) type KGemmFn =
    unsafe fn(&[u8], usize, usize, &[u8], usize, usize, usize, *mut f32, usize);

const fn kbytes(t: u32) -> usize {
    if t == KQ4 {
        144
    } else {
        210
    }
}

/// The 32 unsigned quants of chunk `c` (elements 32c..32c+32) of the block at `bw`.
///
/// # Safety
/// `bw` points at a whole block of `T`; c < 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_chunk<const T: u32>(bw: *const u8, c: usize) -> __m256i {
    let m4 = _mm256_set1_epi8(0x0F);
    // SAFETY: Q4_K qs 16..144, Q6_K ql 0..128 and qh 128..192 are inside the block.
    unsafe {
        if T == KQ4 {
            let v = load(bw.add(16 + 32 * (c / 2)));
            let v = if c % 2 == 1 {
                _mm256_srli_epi16(v, 4)
            } else {
                v
            };
            _mm256_and_si256(v, m4)
        } else {
            let (h, k) = (c / 4, c % 4);
            let l = load(bw.add(64 * h + 32 * (k & 1)));
            let l = if k >= 2 { _mm256_srli_epi16(l, 4) } else { l };
            let hb = load(bw.add(128 + 32 * h));
            // Bits 2k..2k+2 of each qh byte moved to bits 4..6 (16-bit shifts stay inside the
            // byte for the masked bits).
            let hi = match k {
                0 => _mm256_slli_epi16(hb, 4),
                1 => _mm256_slli_epi16(hb, 2),
                2 => hb,
                _ => _mm256_srli_epi16(hb, 2),
            };
            _mm256_or_si256(
                _mm256_and_si256(l, m4),
                _mm256_and_si256(hi, _mm256_set1_epi8(0x30)),
            )
        }
    }
}

/// One row x C tokens over all `nb` super-blocks: the row at `w`, Q8_K tokens at `a + t * xs`.
/// `pf` is the weight row two ahead, prefetched block by block (the rows stream from DRAM the
/// first time a panel is walked; prefetches never fault, so it may point past the matrix).
///
/// # Safety
/// AVX2+FMA+F16C; one whole row of `nb` blocks of `T` at `w` and C rows of `nb` Q8_K blocks
/// are readable; `out + t * ldo` writable for t < C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ktile<const T: u32, const C: usize>(
    w: *const u8,
    pf: *const u8,
    a: *const u8,
    xs: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let bb = const { kbytes(T) };
    // Chunks per super-block. For 4+ tokens LLVM's full unrolling of the chunk loop
    // interleaves the tokens badly (spills); an opaque trip count keeps it a loop (measured
    // ~15% faster there), while 1..=3 tokens are fastest unrolled.
    let nch = if C <= 3 {
        8
    } else {
        std::hint::black_box(8usize)
    };
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        let mut o = 0;
        while o < bb {
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(b * bb + o).cast());
            o += 64;
        }
        // SAFETY: block b < nb of the row is readable (caller contract).
        let bw = unsafe { w.add(b * bb) };
        // Scale sources: Q4_K the 8 scales (i16 lanes 0..8) + mins (8..16) and d, dmin; Q6_K
        // the 16 scales as i16 and d.
        // SAFETY: all offsets are inside the block (Q4_K: d/dmin 0..4, scales 4..16; Q6_K:
        // scales 192..208, d 208..210).
        let (d, dmin, ex) = unsafe {
            if T == KQ4 {
                let (d, dmin) = f16x2_at(bw);
                (d, dmin, scales_mins_k4(bw.add(4)))
            } else {
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bw.add(192).cast()));
                (f16_at_hi(bw.add(208)), 0.0, sc16)
            }
        };
        let (s0, s1) = if T == KQ4 {
            let s128 = _mm256_castsi256_si128(ex);
            let s = _mm256_set_m128i(s128, s128);
            (s, s)
        } else {
            (
                _mm256_permute2x128_si256(ex, ex, 0x00),
                _mm256_permute2x128_si256(ex, ex, 0x11),
            )
        };
        let mut sumi = [_mm256_setzero_si256(); C];
        for c in 0..nch {
            // SAFETY: bw is a whole block of T; c < 8.
            let q = unsafe { k_chunk::<T>(bw, c) };
            let s = if T == KQ4 {
                _mm256_shuffle_epi8(s0, bcast_mask(c as i32, c as i32))
            } else {
                let k = (c % 4) as i32;
                _mm256_shuffle_epi8(if c < 4 { s0 } else { s1 }, bcast_mask(2 * k, 2 * k + 1))
            };
            for (t, st) in sumi.iter_mut().enumerate() {
                // SAFETY: token t < C, block b < nb: 32 quants at Y_QS + 32c are inside.
                let y = unsafe { load(a.add(t * xs + b * Y_BYTES + Y_QS + 32 * c)) };
                *st = _mm256_add_epi32(*st, scaled_dot(q, y, s));
            }
        }
        for (t, (at, st)) in acc.iter_mut().zip(sumi.iter()).enumerate() {
            // SAFETY: token t < C, block b < nb: d at 0 and bsums at Y_BSUMS are inside.
            let (yd, bs) = unsafe {
                let bx = a.add(t * xs + b * Y_BYTES);
                (f32_at(bx), load(bx.add(Y_BSUMS)))
            };
            if T == KQ4 {
                let mt = min_term_k4(ex, bs);
                let mt = _mm256_set_m128i(_mm_setzero_si128(), mt);
                *at = _mm256_fmadd_ps(_mm256_set1_ps(d * yd), _mm256_cvtepi32_ps(*st), *at);
                *at = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * yd), _mm256_cvtepi32_ps(mt), *at);
            } else {
                let off = _mm256_slli_epi32(_mm256_madd_epi16(ex, bs), 5);
                let s = _mm256_sub_epi32(*st, off);
                *at = _mm256_fmadd_ps(_mm256_set1_ps(d * yd), _mm256_cvtepi32_ps(s), *at);
            }
        }
    }
    for (t, at) in acc.iter().enumerate() {
        // SAFETY: t < C: writable per the caller.
        unsafe { *out.add(t * ldo) = hsum_ps(*at) };
    }
}

/// Dispatch a K-quant tile with `1 <= c <= KC` tokens.
macro_rules! ktile_c {
    ($t:ident, $c:expr, $($args:expr),*) => {
        match $c {
            1 => ktile::<$t, 1>($($args),*),
            2 => ktile::<$t, 2>($($args),*),
            3 => ktile::<$t, 3>($($args),*),
            4 => ktile::<$t, 4>($($args),*),
            5 => ktile::<$t, 5>($($args),*),
            6 => ktile::<$t, 6>($($args),*),
            7 => ktile::<$t, 7>($($args),*),
            _ => ktile::<$t, 8>($($args),*),
        }
    };
}

/// Matmul of `nrows` K-quant weight rows against `n_tok` Q8_K rows (see [`KGemmFn`]): row
/// panels of about [`KPANEL_BYTES`]; per panel the tokens in groups of at most [`KC`] (as even
/// as possible, e.g. 9 = 5 + 4), each group walking the panel row by row.
///
/// # Safety
/// AVX2+FMA+F16C; `w.len() >= nrows * rb` with `rb = nb * block bytes`; `x` holds `nb` Q8_K
/// blocks at `t * xs` for t < n_tok (n_tok >= 1); `out + t * ldo + r` writable for r < nrows,
/// t < n_tok.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kgemm<const T: u32>(
    w: &[u8],
    rb: usize,
    nrows: usize,
    x: &[u8],
    xs: usize,
    n_tok: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    debug_assert_eq!(rb, nb * kbytes(T));
    debug_assert!(w.len() >= nrows * rb && x.len() >= (n_tok - 1) * xs + nb * Y_BYTES);
    const { assert!(KC == 8) };
    let (pw, px) = (w.as_ptr(), x.as_ptr());
    let panel = (KPANEL_BYTES / rb.max(1)).max(1);
    let groups = n_tok.div_ceil(KC);
    let mut p0 = 0;
    while p0 < nrows {
        let p1 = (p0 + panel).min(nrows);
        let mut t0 = 0;
        for g in 0..groups {
            // Group sizes differ by at most one (the larger ones first).
            let c = n_tok / groups + usize::from(g < n_tok % groups);
            for r in p0..p1 {
                // SAFETY: row r < nrows and tokens t0..t0+c <= n_tok are in bounds; the
                // prefetch address is never dereferenced.
                unsafe {
                    ktile_c!(
                        T,
                        c,
                        pw.add(r * rb),
                        pw.wrapping_add((r + 2) * rb),
                        px.add(t0 * xs),
                        xs,
                        nb,
                        out.add(t0 * ldo + r),
                        ldo
                    )
                };
            }
            t0 += c;
        }
        p0 = p1;
    }
}

/// The tiled multi-token matmul of K-quant weight type `t` (Q8_K activations), if any.
pub(crate) fn gemm_fn(t: QuantType) -> Option<KGemmFn> {
    Some(match t {
        QuantType::Q4_K => kgemm::<KQ4>,
        QuantType::Q6_K => kgemm::<KQ6>,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Dequantization

/// Stores `dl * q - ml` (or `dl * q` if `ml` is None) for the 8 bytes of `q` (low 64 bits;
/// unsigned if `SIGNED` is false).
///
/// # Safety
/// `y..y+8` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store8<const SIGNED: bool>(q: __m128i, dl: __m256, ml: Option<__m256>, y: *mut f32) {
    let i = if SIGNED {
        _mm256_cvtepi8_epi32(q)
    } else {
        _mm256_cvtepu8_epi32(q)
    };
    let mut v = _mm256_mul_ps(dl, _mm256_cvtepi32_ps(i));
    if let Some(m) = ml {
        v = _mm256_sub_ps(v, m);
    }
    // SAFETY: the caller guarantees 8 writable floats at y.
    unsafe { _mm256_storeu_ps(y, v) };
}

/// Stores 16 values from 16 bytes (see [`store8`]).
///
/// # Safety
/// `y..y+16` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store16<const SIGNED: bool>(q: __m128i, dl: __m256, ml: Option<__m256>, y: *mut f32) {
    // SAFETY: 16 writable floats at y.
    unsafe {
        store8::<SIGNED>(q, dl, ml, y);
        store8::<SIGNED>(_mm_unpackhi_epi64(q, q), dl, ml, y.add(8));
    }
}

/// # Safety
/// AVX2+FMA+F16C; `src` whole Q4_K blocks, `dst` 256 floats per block.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_q4_k(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / 144;
    debug_assert_eq!(dst.len(), nb * QK_K);
    let m4 = _mm256_set1_epi8(0x0F);
    for (b, y) in src.chunks_exact(144).zip(dst.chunks_exact_mut(QK_K)) {
        // SAFETY: b has 144 bytes (d 0, dmin 2, qs 16..144); y has 256 floats, written at
        // 64c + 32s + 16t (+16) < 256.
        unsafe {
            let bw = b.as_ptr();
            let (d, dmin) = f16x2_at(bw);
            let mut s12 = [0u8; 12];
            s12.copy_from_slice(&b[4..16]);
            let (sc, m) = q4_k::scales_mins(&s12);
            for c in 0..4 {
                let q = load(bw.add(16 + 32 * c));
                let halves = [
                    _mm256_and_si256(q, m4),
                    _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                ];
                for (s, v) in halves.into_iter().enumerate() {
                    let j = 2 * c + s;
                    let dl = _mm256_set1_ps(d * f32::from(sc[j]));
                    let ml = _mm256_set1_ps(dmin * f32::from(m[j]));
                    let yp = y.as_mut_ptr().add(32 * j);
                    store16::<false>(_mm256_castsi256_si128(v), dl, Some(ml), yp);
                    store16::<false>(_mm256_extracti128_si256(v, 1), dl, Some(ml), yp.add(16));
                }
            }
        }
    }
}

/// # Safety
/// AVX2+FMA+F16C; `src` whole Q6_K blocks, `dst` 256 floats per block.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_q6_k(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / 210;
    debug_assert_eq!(dst.len(), nb * QK_K);
    let m32 = _mm256_set1_epi8(32);
    for (b, y) in src.chunks_exact(210).zip(dst.chunks_exact_mut(QK_K)) {
        // SAFETY: b is a whole 210-byte block; y has 256 floats, written at
        // 128h + 32k (+16) + 16 <= 256.
        unsafe {
            let bw = b.as_ptr();
            let d = f16_at_hi(bw.add(208));
            for h in 0..2 {
                let q = q6_half(bw, h);
                for (k, v) in q.into_iter().enumerate() {
                    let v = _mm256_sub_epi8(v, m32);
                    let j = 8 * h + 2 * k;
                    let yp = y.as_mut_ptr().add(128 * h + 32 * k);
                    let d0 = _mm256_set1_ps(d * f32::from(b[192 + j] as i8));
                    let d1 = _mm256_set1_ps(d * f32::from(b[193 + j] as i8));
                    store16::<true>(_mm256_castsi256_si128(v), d0, None, yp);
                    store16::<true>(_mm256_extracti128_si256(v, 1), d1, None, yp.add(16));
                }
            }
        }
    }
}

pub(super) fn dequant_fn(t: QuantType) -> Option<DequantFn> {
    Some(match t {
        QuantType::Q4_K => dequant_q4_k,
        QuantType::Q6_K => dequant_q6_k,
        _ => return None,
    })
}

pub(super) fn vec_dot_fn(t: QuantType) -> Option<VecDotFn> {
    Some(match t {
        QuantType::Q2_K => vec_dot_q2_k,
        QuantType::Q3_K => vec_dot_q3_k,
        QuantType::Q4_K => vec_dot_q4_k,
        QuantType::Q5_K => vec_dot_q5_k,
        QuantType::Q6_K => vec_dot_q6_k,
        _ => return None,
    })
}

pub(super) fn quantize_fn(vt: QuantType) -> Option<QuantizeFn> {
    Some(match vt {
        QuantType::Q8_K => quantize_q8_k,
        _ => return None,
    })
}
