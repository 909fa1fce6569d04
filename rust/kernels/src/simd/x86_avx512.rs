//! AVX-512 (F/BW/VL) + VNNI kernels (x86-64). Same function names as `x86_avx2.rs`.
//!
//! Integer dots use `vpdpbusd` (u8 x i8, 4-way, into i32, no saturation). All weight formats are
//! brought to *unsigned* bytes `u` with a per-format zero point `off` (Q4_0: 8, Q5_0: 16,
//! Q8_0: 128 via `w ^ 0x80`, Q4_1/Q5_1: 0), so `sum((u - off) * y) = dpbusd(u, y) - off*sum(y)`,
//! which is exact in i32.
//!
//! These are the single-row kernels of the tier (`vec_dot_*`, `dequant_*`, `quantize_q8`),
//! checked against the scalar references by `tests/kernels.rs` on every machine that has
//! AVX-512. Matmuls do not use them: the tier's matmuls are the AVX2 paths plus the 16-row
//! packed kernel (`crate::packed`).
//!
//! Every fn is `unsafe`: callers guarantee `Isa::Avx512.is_available()` and block-exact lengths.

use std::arch::x86_64::*;

use super::x86_avx2::{f16_at, fmt, hsum256, raw_quants};
use super::{DequantFn, QuantizeFn, VecDotFn};
use crate::quant::{self, QuantType};

const QK: usize = 32;

const Q4_0: u32 = QuantType::Q4_0 as u32;
const Q4_1: u32 = QuantType::Q4_1 as u32;
const Q5_0: u32 = QuantType::Q5_0 as u32;
const Q5_1: u32 = QuantType::Q5_1 as u32;
const Q8_0: u32 = QuantType::Q8_0 as u32;

/// Unsigned zero point of format `T` in the u8 domain used here.
const fn uoff(t: u32) -> i32 {
    match t {
        Q4_0 => 8,
        Q5_0 => 16,
        Q8_0 => 128,
        _ => 0,
    }
}

/// The block's 32 quants as unsigned bytes (Q8_0 shifted by +128).
///
/// # Safety
/// `p` points at a whole block of `T`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn uquants<const T: u32>(p: *const u8) -> __m256i {
    // SAFETY: forwarded caller guarantee.
    let q = unsafe { raw_quants::<T>(p) };
    if T == Q8_0 {
        _mm256_xor_si256(q, _mm256_set1_epi8(-128))
    } else {
        q
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join(a: __m256i, b: __m256i) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1)
}

/// Dot of a quantized row with Q8_0 / Q8_1 activations, two blocks per zmm.
///
/// # Safety
/// AVX-512+VNNI; `w` whole blocks of `T`; `x` as many Q8_0 (Q8_1 if the format has a min) blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vec_dot_q<const T: u32>(w: &[u8], x: &[u8]) -> f32 {
    let f = const { fmt(T) };
    let off = const { uoff(T) };
    let xb = if f.has_m { 36 } else { 34 };
    let xq = if f.has_m { 4 } else { 2 };
    let nb = w.len() / f.bytes;
    debug_assert_eq!(w.len(), nb * f.bytes);
    debug_assert_eq!(x.len(), nb * xb);
    let (pw, px) = (w.as_ptr(), x.as_ptr());
    let offv = _mm512_set1_epi8(off as u8 as i8);
    let zero = _mm512_setzero_si512();
    let mut acc = _mm512_setzero_ps();
    let mut summs = 0.0f32;
    let mut i = 0;
    while i + 2 <= nb {
        // SAFETY: blocks i and i+1 lie inside w and x (i + 2 <= nb); field offsets per layout.
        let (u, y, da, db) = unsafe {
            let (wa, wb) = (pw.add(i * f.bytes), pw.add((i + 1) * f.bytes));
            let (xa, xb2) = (px.add(i * xb), px.add((i + 1) * xb));
            if f.has_m {
                summs +=
                    f16_at(wa.add(2)) * f16_at(xa.add(2)) + f16_at(wb.add(2)) * f16_at(xb2.add(2));
            }
            (
                join(uquants::<T>(wa), uquants::<T>(wb)),
                join(
                    _mm256_loadu_si256(xa.add(xq).cast()),
                    _mm256_loadu_si256(xb2.add(xq).cast()),
                ),
                f16_at(wa) * f16_at(xa),
                f16_at(wb) * f16_at(xb2),
            )
        };
        let mut s = _mm512_dpbusd_epi32(zero, u, y);
        if off != 0 {
            s = _mm512_sub_epi32(s, _mm512_dpbusd_epi32(zero, offv, y));
        }
        let scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(da), _mm512_set1_ps(db));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc);
        i += 2;
    }
    let mut tail = _mm256_setzero_ps();
    if i < nb {
        // SAFETY: block i = nb - 1 lies inside w and x.
        let (u, y, d) = unsafe {
            let (wa, xa) = (pw.add(i * f.bytes), px.add(i * xb));
            if f.has_m {
                summs += f16_at(wa.add(2)) * f16_at(xa.add(2));
            }
            (
                uquants::<T>(wa),
                _mm256_loadu_si256(xa.add(xq).cast()),
                f16_at(wa) * f16_at(xa),
            )
        };
        let z = _mm256_setzero_si256();
        let mut s = _mm256_dpbusd_epi32(z, u, y);
        if off != 0 {
            s = _mm256_sub_epi32(
                s,
                _mm256_dpbusd_epi32(z, _mm256_set1_epi8(off as u8 as i8), y),
            );
        }
        tail = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d));
    }
    let lo = _mm512_castps512_ps256(acc);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
    hsum256(_mm256_add_ps(_mm256_add_ps(lo, hi), tail)) + summs
}

/// 16 weights of a float format at element `i` as f32.
///
/// # Safety
/// Elements i..i+16 readable.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn load16<const T: u32>(p: *const u8, i: usize) -> __m512 {
    // SAFETY: the caller guarantees 16 elements at i.
    unsafe {
        match T {
            0 => _mm512_loadu_ps(p.cast::<f32>().add(i)),
            1 => _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<u16>().add(i).cast())),
            _ => _mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast::<u16>().add(i).cast())),
                16,
            )),
        }
    }
}

/// Dot of an F32 (T=0) / F16 (1) / BF16 (30) row with f32 activations (as bytes).
///
/// # Safety
/// AVX-512; `x.len() / 4` elements in `w`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vec_dot_float<const T: u32>(w: &[u8], x: &[u8]) -> f32 {
    let n = x.len() / 4;
    debug_assert_eq!(w.len(), n * if T == 0 { 4 } else { 2 });
    let (pw, px) = (w.as_ptr(), x.as_ptr().cast::<f32>());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 64 <= n.
            let (wv, xv) = unsafe {
                (
                    load16::<T>(pw, i + 16 * k),
                    _mm512_loadu_ps(px.add(i + 16 * k)),
                )
            };
            *a = _mm512_fmadd_ps(wv, xv, *a);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let (wv, xv) = unsafe { (load16::<T>(pw, i), _mm512_loadu_ps(px.add(i))) };
        acc[0] = _mm512_fmadd_ps(wv, xv, acc[0]);
        i += 16;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ));
    if i < n {
        let ws = if T == 0 { 4 } else { 2 };
        let (wt, xt) = (&w[i * ws..], &x[i * 4..]);
        s += match T {
            0 => quant::fp32::vec_dot(wt, xt),
            1 => quant::fp16::vec_dot(wt, xt),
            _ => quant::bf16::vec_dot(wt, xt),
        };
    }
    s
}

/// # Safety
/// AVX-512; `src` whole blocks of `T`, `dst` 32 floats per block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dequant_q<const T: u32>(src: &[u8], dst: &mut [f32]) {
    let f = const { fmt(T) };
    let nb = src.len() / f.bytes;
    debug_assert_eq!(dst.len(), nb * QK);
    for i in 0..nb {
        // SAFETY: block i lies inside src; dst has 32 floats for it.
        unsafe {
            let b = src.as_ptr().add(i * f.bytes);
            let y = dst.as_mut_ptr().add(i * QK);
            let dv = _mm512_set1_ps(f16_at(b));
            let q = raw_quants::<T>(b);
            let q = if f.off != 0 {
                _mm256_sub_epi8(q, _mm256_set1_epi8(f.off))
            } else {
                q
            };
            for h in 0..2 {
                let qq = if h == 0 {
                    _mm256_castsi256_si128(q)
                } else {
                    _mm256_extracti128_si256(q, 1)
                };
                let iv = if f.has_m {
                    _mm512_cvtepu8_epi32(qq)
                } else {
                    _mm512_cvtepi8_epi32(qq)
                };
                let mut v = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(iv));
                if f.has_m {
                    v = _mm512_add_ps(v, _mm512_set1_ps(f16_at(b.add(2))));
                }
                _mm512_storeu_ps(y.add(16 * h), v);
            }
        }
    }
}

/// # Safety
/// AVX-512; `src` holds `dst.len()` elements of F32 (T=0) / F16 (1) / BF16 (30).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dequant_float<const T: u32>(src: &[u8], dst: &mut [f32]) {
    let n = dst.len();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n elements in src and dst.
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(i), load16::<T>(src.as_ptr(), i)) };
        i += 16;
    }
    let ws = if T == 0 { 4 } else { 2 };
    match T {
        0 => quant::fp32::dequantize(&src[i * ws..], &mut dst[i..]),
        1 => quant::fp16::dequantize(&src[i * ws..], &mut dst[i..]),
        _ => quant::bf16::dequantize(&src[i * ws..], &mut dst[i..]),
    }
}

/// Quantize f32 activations to Q8_0 (`Q81 = false`) or Q8_1, bit-identical to the references.
///
/// # Safety
/// AVX-512; `x.len()` multiple of 32, `dst` 34 (36) bytes per 32 values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn quantize_q8<const Q81: bool>(x: &[f32], dst: &mut [u8]) {
    let bs = if Q81 { 36 } else { 34 };
    let nb = x.len() / QK;
    debug_assert_eq!(dst.len(), nb * bs);
    for i in 0..nb {
        // SAFETY: block i: 32 floats of x are in bounds.
        let (a, b) = unsafe {
            let p = x.as_ptr().add(i * QK);
            (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
        };
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let idv = _mm512_set1_ps(id);
        let qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, idv));
        let qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, idv));
        let dh =
            _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT), 0) as u16;
        let o = &mut dst[i * bs..(i + 1) * bs];
        o[..2].copy_from_slice(&dh.to_le_bytes());
        if Q81 {
            let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
            let sh = _mm_extract_epi16(
                _mm_cvtps_ph(_mm_set_ss(sum as f32 * d), _MM_FROUND_TO_NEAREST_INT),
                0,
            ) as u16;
            o[2..4].copy_from_slice(&sh.to_le_bytes());
        }
        // SAFETY: o has bs bytes; the 32 quants go at o[bs-32..bs]. Values are in [-127, 127]
        // so the truncating vpmovdb is exact.
        unsafe {
            let q = o.as_mut_ptr().add(bs - 32);
            _mm_storeu_si128(q.cast(), _mm512_cvtepi32_epi8(qa));
            _mm_storeu_si128(q.add(16).cast(), _mm512_cvtepi32_epi8(qb));
        }
    }
}

pub(super) fn dequant_fn(t: QuantType) -> Option<DequantFn> {
    Some(match t {
        QuantType::F32 => dequant_float::<0>,
        QuantType::F16 => dequant_float::<1>,
        QuantType::BF16 => dequant_float::<30>,
        QuantType::Q4_0 => dequant_q::<Q4_0>,
        QuantType::Q4_1 => dequant_q::<Q4_1>,
        QuantType::Q5_0 => dequant_q::<Q5_0>,
        QuantType::Q5_1 => dequant_q::<Q5_1>,
        QuantType::Q8_0 => dequant_q::<Q8_0>,
        _ => return None,
    })
}

pub(super) fn vec_dot_fn(t: QuantType) -> Option<VecDotFn> {
    Some(match t {
        QuantType::F32 => vec_dot_float::<0>,
        QuantType::F16 => vec_dot_float::<1>,
        QuantType::BF16 => vec_dot_float::<30>,
        QuantType::Q4_0 => vec_dot_q::<Q4_0>,
        QuantType::Q4_1 => vec_dot_q::<Q4_1>,
        QuantType::Q5_0 => vec_dot_q::<Q5_0>,
        QuantType::Q5_1 => vec_dot_q::<Q5_1>,
        QuantType::Q8_0 => vec_dot_q::<Q8_0>,
        _ => return None,
    })
}

pub(super) fn quantize_fn(vt: QuantType) -> Option<QuantizeFn> {
    Some(match vt {
        QuantType::Q8_0 => quantize_q8::<false>,
        QuantType::Q8_1 => quantize_q8::<true>,
        _ => return None,
    })
}
