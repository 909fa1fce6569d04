//! AVX2 + FMA + F16C kernels (x86-64). Same function names as `x86_avx512.rs`.
//!
//! Integer dots follow ggml `arch/x86/quants.c`: weights become 32 bytes per block, then
//! `vpmaddubsw` (u8 x i8 -> i16 pairs) + `vpmaddwd` with ones (-> i32) and one FMA per block
//! with the combined scale. Signed weights use the sign trick (|w| x sign(y, w)); pair sums stay
//! below i16 saturation because activations are in [-127, 127] (|w| <= 128). Dequantization
//! does exactly the reference's f32 operations (mul, then add; never FMA), so it is bit-exact.
//!
//! Every public fn here is `unsafe`: callers guarantee AVX2+FMA+F16C (checked via
//! `Isa::Avx2.is_available()`) and whole-block slice lengths (debug-asserted).

use std::arch::x86_64::*;

use super::{DequantFn, QuantizeFn, VecDotFn};
use crate::quant::{self, QuantType};

const QK: usize = 32;

const Q4_0: u32 = QuantType::Q4_0 as u32;
const Q4_1: u32 = QuantType::Q4_1 as u32;
const Q5_0: u32 = QuantType::Q5_0 as u32;
const Q5_1: u32 = QuantType::Q5_1 as u32;
const Q8_0: u32 = QuantType::Q8_0 as u32;

/// Static layout facts of a 32-element block format.
#[derive(Clone, Copy)]
pub(super) struct Fmt {
    /// Bytes per block.
    pub bytes: usize,
    /// Has an f16 min `m` at byte 2 (Q4_1, Q5_1): dot against Q8_1.
    pub has_m: bool,
    /// Zero point subtracted from the unsigned quants (8, 16; 0 for Q8_0 which is signed).
    pub off: i8,
}

pub(super) const fn fmt(t: u32) -> Fmt {
    match t {
        Q4_0 => Fmt {
            bytes: 18,
            has_m: false,
            off: 8,
        },
        Q4_1 => Fmt {
            bytes: 20,
            has_m: true,
            off: 0,
        },
        Q5_0 => Fmt {
            bytes: 22,
            has_m: false,
            off: 16,
        },
        Q5_1 => Fmt {
            bytes: 24,
            has_m: true,
            off: 0,
        },
        _ => Fmt {
            bytes: 34,
            has_m: false,
            off: 0,
        },
    }
}

/// f16 at `p` as f32.
///
/// # Safety
/// `p..p+2` readable; F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees two readable bytes at p.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// f16 at `p` as f32 from a 32-bit load (`vmovd` writes the whole register; the 16-bit insert
/// of [`f16_at`] carries a false dependency on the register's previous value).
///
/// # Safety
/// `p..p+4` readable; F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_lo32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees four readable bytes at p.
    let bits = unsafe { p.cast::<u32>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 16 bytes of nibbles at `p` -> 32 bytes: low nibbles first (elements 0..16), then high.
///
/// # Safety
/// `p..p+16` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes.
    let t = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast())) };
    let b = _mm256_srlv_epi64(t, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
}

/// 32 bits at `p` -> 32 bytes, byte j = 0x10 if bit j is set (the fifth bit of Q5 quants).
///
/// # Safety
/// `p..p+4` readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes.
    let x = unsafe { p.cast::<i32>().read_unaligned() };
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    let set = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The 32 raw quants of the block at `p`: unsigned 0..15 / 0..31 for Q4/Q5, signed for Q8_0.
///
/// # Safety
/// `p` points at a whole block of format `T`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn raw_quants<const T: u32>(p: *const u8) -> __m256i {
    // SAFETY: (all arms) the offsets are within the block layout of T (see quant::*), which the
    // caller guarantees is readable at p.
    unsafe {
        match T {
            Q4_0 => nibbles(p.add(2)),
            Q4_1 => nibbles(p.add(4)),
            Q5_0 => _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2))),
            Q5_1 => _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4))),
            _ => _mm256_loadu_si256(p.add(2).cast()),
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_u8_i8(u: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_i8_i8(w: __m256i, y: __m256i) -> __m256i {
    sum_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Dot of a quantized row with Q8_0 / Q8_1 activations.
///
/// # Safety
/// AVX2+FMA+F16C; `w` whole blocks of `T`; `x` the same number of Q8_0 (Q8_1 if `has_m`) blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q<const T: u32>(w: &[u8], x: &[u8]) -> f32 {
    let f = const { fmt(T) };
    let xb = if f.has_m { 36 } else { 34 };
    let xq = if f.has_m { 4 } else { 2 };
    let nb = w.len() / f.bytes;
    debug_assert_eq!(w.len(), nb * f.bytes);
    debug_assert_eq!(x.len(), nb * xb);
    let (pw, px) = (w.as_ptr(), x.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for i in 0..nb {
        // SAFETY: i < nb, so block i of w (f.bytes) and of x (xb) lie inside the slices.
        let (bw, bx) = unsafe { (pw.add(i * f.bytes), px.add(i * xb)) };
        // SAFETY: bw/bx are whole blocks (above); the f16 fields are at offsets 0 and 2.
        let (q, y, d) = unsafe {
            let d = f16_at(bw) * f16_at(bx);
            if f.has_m {
                summs += f16_at(bw.add(2)) * f16_at(bx.add(2));
            }
            (
                raw_quants::<T>(bw),
                _mm256_loadu_si256(bx.add(xq).cast()),
                d,
            )
        };
        let p = if f.has_m {
            sum_u8_i8(q, y)
        } else if f.off != 0 {
            sum_i8_i8(_mm256_sub_epi8(q, _mm256_set1_epi8(f.off)), y)
        } else {
            sum_i8_i8(q, y)
        };
        let p = _mm256_cvtepi32_ps(p);
        if i % 2 == 0 {
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc0);
        } else {
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d), p, acc1);
        }
    }
    hsum256(_mm256_add_ps(acc0, acc1)) + summs
}

/// Loads 8 weights of a float format at element `i` as f32.
///
/// # Safety
/// Elements i..i+8 readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8<const T: u32>(p: *const u8, i: usize) -> __m256 {
    // SAFETY: the caller guarantees 8 elements at i.
    unsafe {
        match T {
            0 => _mm256_loadu_ps(p.cast::<f32>().add(i)),
            1 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<u16>().add(i).cast())),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast::<u16>().add(i).cast())),
                16,
            )),
        }
    }
}

/// Dot of an F32 (T=0) / F16 (T=1) / BF16 (T=30) row with f32 activations (as bytes).
///
/// # Safety
/// AVX2+FMA+F16C; `x.len() / 4 == n` elements of `w`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_float<const T: u32>(w: &[u8], x: &[u8]) -> f32 {
    let n = x.len() / 4;
    debug_assert_eq!(w.len(), n * if T == 0 { 4 } else { 2 });
    let (pw, px) = (w.as_ptr(), x.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 32 <= n, so elements i+8k..i+8k+8 exist in both rows.
            let (wv, xv) = unsafe {
                (
                    load8::<T>(pw, i + 8 * k),
                    _mm256_loadu_ps(px.add(i + 8 * k)),
                )
            };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (wv, xv) = unsafe { (load8::<T>(pw, i), _mm256_loadu_ps(px.add(i))) };
        acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
        i += 8;
    }
    let mut s = hsum256(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
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

/// Stores 32 dequantized values `d * q (+ m)` from 32 quant bytes (signed if `SIGNED`).
///
/// # Safety
/// `y..y+32` writable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_deq<const SIGNED: bool>(q: __m256i, d: f32, m: Option<f32>, y: *mut f32) {
    let dv = _mm256_set1_ps(d);
    let halves = [_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)];
    for (h, qq) in halves.into_iter().enumerate() {
        for k in 0..2 {
            let b = if k == 0 {
                qq
            } else {
                _mm_unpackhi_epi64(qq, qq)
            };
            let i = if SIGNED {
                _mm256_cvtepi8_epi32(b)
            } else {
                _mm256_cvtepu8_epi32(b)
            };
            let mut v = _mm256_mul_ps(dv, _mm256_cvtepi32_ps(i));
            if let Some(m) = m {
                v = _mm256_add_ps(v, _mm256_set1_ps(m));
            }
            // SAFETY: 16h + 8k + 8 <= 32 floats, writable per the caller.
            unsafe { _mm256_storeu_ps(y.add(16 * h + 8 * k), v) };
        }
    }
}

/// # Safety
/// AVX2+FMA+F16C; `src` whole blocks of `T`, `dst` 32 floats per block.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_q<const T: u32>(src: &[u8], dst: &mut [f32]) {
    let f = const { fmt(T) };
    let nb = src.len() / f.bytes;
    debug_assert_eq!(dst.len(), nb * QK);
    for i in 0..nb {
        // SAFETY: block i lies inside src; dst has 32 floats for it.
        unsafe {
            let b = src.as_ptr().add(i * f.bytes);
            let y = dst.as_mut_ptr().add(i * QK);
            let d = f16_at(b);
            let q = raw_quants::<T>(b);
            if f.has_m {
                store_deq::<false>(q, d, Some(f16_at(b.add(2))), y);
            } else if f.off != 0 {
                store_deq::<true>(_mm256_sub_epi8(q, _mm256_set1_epi8(f.off)), d, None, y);
            } else {
                store_deq::<true>(q, d, None, y);
            }
        }
    }
}

/// # Safety
/// AVX2+FMA+F16C; `src` holds `dst.len()` elements of F32 (T=0) / F16 (1) / BF16 (30).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant_float<const T: u32>(src: &[u8], dst: &mut [f32]) {
    let n = dst.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements in src and dst.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(i), load8::<T>(src.as_ptr(), i)) };
        i += 8;
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
/// AVX2+FMA+F16C; `x.len()` multiple of 32, `dst` 34 (36) bytes per 32 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8<const Q81: bool>(x: &[f32], dst: &mut [u8]) {
    let bs = if Q81 { 36 } else { 34 };
    let nb = x.len() / QK;
    debug_assert_eq!(dst.len(), nb * bs);
    let sign = _mm256_set1_ps(-0.0);
    for i in 0..nb {
        // SAFETY: block i: 32 floats of x and bs bytes of dst are in bounds.
        let v: [__m256; 4] = unsafe {
            let p = x.as_ptr().add(i * QK);
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for vv in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vv));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let amax = _mm_cvtss_f32(m4);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let idv = _mm256_set1_ps(id);
        let q: [__m256i; 4] =
            core::array::from_fn(|k| _mm256_cvtps_epi32(_mm256_mul_ps(v[k], idv)));
        let i0 = _mm256_packs_epi32(q[0], q[1]);
        let i2 = _mm256_packs_epi32(q[2], q[3]);
        let b = _mm256_packs_epi16(i0, i2);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let dh =
            _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT), 0) as u16;
        let o = &mut dst[i * bs..(i + 1) * bs];
        o[..2].copy_from_slice(&dh.to_le_bytes());
        if Q81 {
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
            let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b10_11_00_01));
            let sum = _mm_cvtsi128_si32(s4);
            let sh = _mm_extract_epi16(
                _mm_cvtps_ph(_mm_set_ss(sum as f32 * d), _MM_FROUND_TO_NEAREST_INT),
                0,
            ) as u16;
            o[2..4].copy_from_slice(&sh.to_le_bytes());
        }
        // SAFETY: o has bs bytes; the 32 quants go at o[bs-32..bs].
        unsafe { _mm256_storeu_si256(o.as_mut_ptr().add(bs - 32).cast(), b) };
    }
}

// ---------------------------------------------------------------------------------------------
// Register-tiled matmul (gemv for one token, gemm for several), llamafile-tinyBLAS style.
//
// Activations are first quantized (Q8_0 / Q8_1, bit-identical to the references) and then
// "prepared" once per matmul into `ABLK`-byte records per (token, block):
//   [0..32)  the 32 int8 quants y
//   [32..64) 16 x i16: `off * (y[2k] + y[2k+1])`, the zero-point correction of Q4_0 (off 8) /
//            Q5_0 (off 16) weights in the `vpmaddubsw` (i16 pair) domain; unused otherwise
//   [64..68) d (f32)      [68..72) s / 8 (f32, Q8_1 only: spreads `m * s` over 8 lanes)
// A tile kernel keeps R rows x C tokens of 8-lane f32 accumulators in registers. Per block it
// unpacks each weight row once (unsigned quants, or |w| for Q8_0) and reuses it for C tokens;
// the prepared activation records are read straight from L1 as memory operands. Per
// (row, token, block): maddubs (+ psubw / psignb) + maddwd + cvt + mul + fma; horizontal sums
// only once per output. Exactness: Q4/Q5 pair sums are <= 31*127*2, Q8_0 |w| <= 128 so
// maddubs never saturates; every integer block dot is exact, only f32 scaling rounds.
//
// Batch invariance: each (row, token) output has its own accumulator and sees the same
// operations in the same order (block by block: `acc = fma(dw * dx, p, acc)`, then the Q8_1
// `fma(m, s/8, acc)`; then `hsum256`) whatever tile computes it: the 4-row gemv, the 2-row or
// 1-row gemm tiles of any token count, or the Q8_0 tile on a converted Q4_0/Q5_0 panel (the
// same exact integer dot and the same f16 scale). So a token's outputs do not depend on the
// batch size, its position, the panel / chunk split or the thread count. The weight
// prefetches change no arithmetic.

/// Bytes per prepared activation block.
pub(crate) const ABLK: usize = 80;

/// Rows of the gemm tiles of 1..=3 tokens, and most tokens per tile (one row x 8 tokens: 8
/// accumulators + quants, scales, temporaries fit the 16 ymm without spills).
const GR: usize = 2;
const GC: usize = 8;
/// Rows of the gemv tile (one token).
const VR: usize = 4;
/// Target weight bytes of a row panel (kept L2-resident while all token groups pass over it).
const PANEL_BYTES: usize = 96 * 1024;

/// One row of Q8_0 / Q8_1 activation blocks -> prepared records (see above).
pub(crate) type PrepFn = unsafe fn(&[u8], &mut [u8]);
/// `out[t * ldo + r] = dot(W[r], act[t])` for `r < nrows`, `t < n_tok`.
/// Args: w (nrows rows of `rb` bytes), rb, nrows, act (token t's `nb` records at byte
/// `t * astride`), astride, n_tok, nb, out, ldo.
pub(crate) type GemmFn =
    unsafe fn(&[u8], usize, usize, &[u8], usize, usize, usize, *mut f32, usize);

/// # Safety
/// AVX2+FMA+F16C; `xq` whole Q8_0 (`Q81 = false`) / Q8_1 blocks, `dst` `ABLK` bytes per block.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prep_act<const OFF: i8, const Q81: bool>(xq: &[u8], dst: &mut [u8]) {
    let xb = if Q81 { 36 } else { 34 };
    let nb = xq.len() / xb;
    debug_assert_eq!(dst.len(), nb * ABLK);
    for i in 0..nb {
        // SAFETY: block i of xq (xb bytes) and record i of dst (ABLK bytes) are in bounds.
        unsafe {
            let s = xq.as_ptr().add(i * xb);
            let o = dst.as_mut_ptr().add(i * ABLK);
            let y = _mm256_loadu_si256(s.add(xb - 32).cast());
            _mm256_storeu_si256(o.cast(), y);
            let corr = if OFF != 0 {
                _mm256_maddubs_epi16(_mm256_set1_epi8(OFF), y)
            } else {
                _mm256_setzero_si256()
            };
            _mm256_storeu_si256(o.add(32).cast(), corr);
            o.add(64).cast::<f32>().write_unaligned(f16_at(s));
            let s8 = if Q81 { f16_at(s.add(2)) * 0.125 } else { 0.0 };
            o.add(68).cast::<f32>().write_unaligned(s8);
            o.add(72).cast::<u64>().write_unaligned(0);
        }
    }
}

/// `v`, but opaque to the optimizer. Applied to the broadcast weight scale, it keeps LLVM from
/// rewriting `splat(dw) * splat(dx)` as a scalar multiply plus a register broadcast (two vector
/// ALU uops) instead of one `vmulps` against the broadcast load of `dx`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn opaque(mut v: __m256) -> __m256 {
    // SAFETY: an empty asm block that only claims to modify one register: no memory, stack or
    // flags are touched.
    unsafe {
        std::arch::asm!("/* {0} */", inout(ymm_reg) v, options(pure, nomem, nostack, preserves_flags))
    };
    v
}

/// R x C tile over all `nb` blocks: rows at `w + r * rb`, prepared tokens at `a + t * arb`.
///
/// # Safety
/// AVX2+FMA+F16C; R whole rows of `nb` blocks of `T` and C prepared rows of `nb` records are
/// readable; `out + t * ldo + r` writable for r < R, t < C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const T: u32, const R: usize, const C: usize>(
    w: *const u8,
    rb: usize,
    a: *const u8,
    arb: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let f = const { fmt(T) };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    for b in 0..nb {
        // The weights stream from DRAM/L3 (gemv, and the first token group of a gemm panel),
        // R interleaved rows at a time, which the hardware prefetchers follow poorly: prefetch
        // the tile two ahead (R rows are contiguous), R block-lengths per step. Prefetches
        // never fault; wrapping_add keeps the address computation defined past the end.
        let pf = w.wrapping_add(2 * R * rb + b * R * f.bytes);
        let mut o = 0;
        while o < R * f.bytes {
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(o).cast());
            o += 64;
        }
        for (r, accr) in acc.iter_mut().enumerate() {
            // SAFETY: row r < R, block b < nb: inside the caller-guaranteed weight rows.
            let bw = unsafe { w.add(r * rb + b * f.bytes) };
            // SAFETY: bw is a whole block of T.
            // SAFETY: bw is a whole block of T (at least 18 bytes).
            let (q, dw) = unsafe { (raw_quants::<T>(bw), _mm256_set1_ps(f16_lo32_at(bw))) };
            let dw = opaque(dw);
            let mw = if f.has_m {
                // SAFETY: as above (the min is at offset 2 of Q4_1/Q5_1 blocks).
                _mm256_set1_ps(unsafe { f16_at(bw.add(2)) })
            } else {
                _mm256_setzero_ps()
            };
            let qa = if T == Q8_0 { _mm256_sign_epi8(q, q) } else { q };
            for (t, acct) in accr.iter_mut().enumerate() {
                // SAFETY: token t < C, record b < nb: inside the caller-guaranteed act rows.
                let ba = unsafe { a.add(t * arb + b * ABLK) };
                // SAFETY: ba is a whole ABLK record (quants, correction, d, s/8).
                let (y, dx) = unsafe {
                    (
                        _mm256_loadu_si256(ba.cast()),
                        _mm256_broadcast_ss(&*ba.add(64).cast::<f32>()),
                    )
                };
                let p16 = if T == Q8_0 {
                    _mm256_maddubs_epi16(qa, _mm256_sign_epi8(y, q))
                } else if f.off != 0 {
                    // SAFETY: the correction lies inside the record.
                    let c = unsafe { _mm256_loadu_si256(ba.add(32).cast()) };
                    _mm256_sub_epi16(_mm256_maddubs_epi16(qa, y), c)
                } else {
                    _mm256_maddubs_epi16(qa, y)
                };
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                *acct = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), p, *acct);
                if f.has_m {
                    // SAFETY: s/8 lies inside the record.
                    let s8 = unsafe { _mm256_broadcast_ss(&*ba.add(68).cast::<f32>()) };
                    *acct = _mm256_fmadd_ps(mw, s8, *acct);
                }
            }
        }
    }
    for (r, accr) in acc.iter().enumerate() {
        for (t, acct) in accr.iter().enumerate() {
            // SAFETY: r < R, t < C: writable per the caller.
            unsafe { *out.add(t * ldo + r) = hsum256(*acct) };
        }
    }
}

/// Dispatch an `r x c` tile to its instantiation: one-token tiles of 1..=4 rows (gemv), two
/// rows x 1..=3 tokens, one row x 1..=8 tokens (see [`gemm_q`]).
macro_rules! tile_rc {
    ($t:ident, $r:expr, $c:expr, $($args:expr),*) => {
        match ($r, $c) {
            (1, 1) => tile::<$t, 1, 1>($($args),*),
            (1, 2) => tile::<$t, 1, 2>($($args),*),
            (1, 3) => tile::<$t, 1, 3>($($args),*),
            (1, 4) => tile::<$t, 1, 4>($($args),*),
            (1, 5) => tile::<$t, 1, 5>($($args),*),
            (1, 6) => tile::<$t, 1, 6>($($args),*),
            (1, 7) => tile::<$t, 1, 7>($($args),*),
            (1, 8) => tile::<$t, 1, 8>($($args),*),
            (2, 1) => tile::<$t, 2, 1>($($args),*),
            (2, 2) => tile::<$t, 2, 2>($($args),*),
            (2, 3) => tile::<$t, 2, 3>($($args),*),
            (3, 1) => tile::<$t, 3, 1>($($args),*),
            (4, 1) => tile::<$t, 4, 1>($($args),*),
            (r, c) => unreachable!("no {r} x {c} tile"),
        }
    };
}

/// All tokens over the row panel of `nrows` rows at `w`: tokens in groups of at most [`GC`]
/// (as even as possible, e.g. 9 = 5 + 4), each group walking the panel with tiles of one row
/// (groups of 4 or more tokens: `c` accumulators) or two rows (groups of 1..=3 tokens: more
/// independent FMA chains per block).
///
/// # Safety
/// As [`gemm_q`] for the panel's rows (`w` whole rows of `rb` bytes of `T`).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel_tiles<const T: u32>(
    w: *const u8,
    rb: usize,
    nrows: usize,
    act: *const u8,
    arb: usize,
    n_tok: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    const { assert!(GR == 2 && GC == 8) };
    let groups = n_tok.div_ceil(GC);
    let mut t0 = 0;
    for g in 0..groups {
        let c = n_tok / groups + usize::from(g < n_tok % groups);
        let tr = if c <= 3 { GR } else { 1 };
        let mut r = 0;
        while r < nrows {
            let rr = (nrows - r).min(tr);
            // SAFETY: rows r..r+rr < nrows and tokens t0..t0+c <= n_tok are in bounds (caller
            // contract).
            unsafe {
                tile_rc!(
                    T,
                    rr,
                    c,
                    w.add(r * rb),
                    rb,
                    act.add(t0 * arb),
                    arb,
                    nb,
                    out.add(t0 * ldo + r),
                    ldo
                )
            };
            r += rr;
        }
        t0 += c;
    }
}

/// Matmul of `nrows` weight rows against `n_tok` prepared activation rows (see [`GemmFn`]).
///
/// # Safety
/// AVX2+FMA+F16C; `w.len() >= nrows * rb` with `rb = nb * block bytes`; `act` holds `nb`
/// records at `t * arb` for t < n_tok (n_tok >= 1); `out + t * ldo + r` writable for r < nrows,
/// t < n_tok.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_q<const T: u32>(
    w: &[u8],
    rb: usize,
    nrows: usize,
    act: &[u8],
    arb: usize,
    n_tok: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    debug_assert_eq!(rb, nb * fmt(T).bytes);
    debug_assert!(w.len() >= nrows * rb && act.len() >= (n_tok - 1) * arb + nb * ABLK);
    let (pw, pa) = (w.as_ptr(), act.as_ptr());
    if n_tok == 1 {
        let mut r = 0;
        while r < nrows {
            let rr = (nrows - r).min(VR);
            // SAFETY: rows r..r+rr < nrows and token 0 are in bounds (caller contract).
            unsafe { tile_rc!(T, rr, 1, pw.add(r * rb), rb, pa, arb, nb, out.add(r), ldo) };
            r += rr;
        }
        return;
    }
    const { assert!(VR == 4) };
    if (T == Q4_0 || T == Q5_0) && n_tok > 2 * GC {
        // SAFETY: forwarded caller contract.
        unsafe { gemm_conv::<T>(w, rb, nrows, act, arb, n_tok, nb, out, ldo) };
        return;
    }
    let panel = (PANEL_BYTES / rb.max(1)).max(GR);
    let mut p0 = 0;
    while p0 < nrows {
        let p1 = (p0 + panel).min(nrows);
        // SAFETY: rows p0..p1 < nrows, all tokens; out + t*ldo + p0 + r is writable for
        // r < p1 - p0 (caller contract).
        unsafe {
            panel_tiles::<T>(
                pw.add(p0 * rb),
                rb,
                p1 - p0,
                pa,
                arb,
                n_tok,
                nb,
                out.add(p0),
                ldo,
            )
        };
        p0 = p1;
    }
}

thread_local! {
    /// Per-thread buffer of a row panel converted to Q8_0 (see [`gemm_conv`]).
    static CONV: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`gemm_q`] for Q4_0 / Q5_0 with many tokens: each row panel is first converted once to Q8_0
/// blocks (same f16 d, quants `q - off` as i8: exact), then runs through the Q8_0 tile, whose
/// inner loop needs no unpacking, no zero-point correction and fewer registers. The tokens use
/// the same prepared records (quants and d are where the Q8_0 tile reads them).
///
/// # Safety
/// As [`gemm_q`]; T is Q4_0 or Q5_0.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_conv<const T: u32>(
    w: &[u8],
    rb: usize,
    nrows: usize,
    act: &[u8],
    arb: usize,
    n_tok: usize,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let f = const { fmt(T) };
    let rb8 = nb * 34;
    let panel = (PANEL_BYTES / rb8.max(1)).max(GR);
    let (pw, pa) = (w.as_ptr(), act.as_ptr());
    CONV.with_borrow_mut(|buf| {
        let need = panel.min(nrows) * rb8;
        if buf.len() < need {
            buf.resize(need, 0);
        }
        let pc = buf.as_mut_ptr();
        let mut p0 = 0;
        while p0 < nrows {
            let p1 = (p0 + panel).min(nrows);
            for i in 0..(p1 - p0) * nb {
                // SAFETY: block i of rows p0..p1 is inside w (whole blocks of T); converted
                // block i (34 bytes) is inside buf ((p1 - p0) * rb8 <= need bytes).
                unsafe {
                    let src = pw.add(p0 * rb + i * f.bytes);
                    let dst = pc.add(i * 34);
                    let q = _mm256_sub_epi8(raw_quants::<T>(src), _mm256_set1_epi8(f.off));
                    dst.cast::<u16>()
                        .write_unaligned(src.cast::<u16>().read_unaligned());
                    _mm256_storeu_si256(dst.add(2).cast(), q);
                }
            }
            // SAFETY: the converted rows 0..p1-p0 are inside buf (whole Q8_0 rows of rb8
            // bytes), the tokens are in act and out + t*ldo + p0 + r is writable for
            // r < p1 - p0 (caller contract).
            unsafe {
                panel_tiles::<Q8_0>(
                    pc.cast_const(),
                    rb8,
                    p1 - p0,
                    pa,
                    arb,
                    n_tok,
                    nb,
                    out.add(p0),
                    ldo,
                )
            };
            p0 = p1;
        }
    });
}

/// The tiled matmul of weight type `t` and the activation preparation it needs.
pub(crate) fn gemm_fn(t: QuantType) -> Option<(GemmFn, PrepFn)> {
    Some(match t {
        QuantType::Q4_0 => (gemm_q::<Q4_0>, prep_act::<8, false>),
        QuantType::Q4_1 => (gemm_q::<Q4_1>, prep_act::<0, true>),
        QuantType::Q5_0 => (gemm_q::<Q5_0>, prep_act::<16, false>),
        QuantType::Q5_1 => (gemm_q::<Q5_1>, prep_act::<0, true>),
        QuantType::Q8_0 => (gemm_q::<Q8_0>, prep_act::<0, false>),
        _ => return None,
    })
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

pub(crate) fn quantize_fn(vt: QuantType) -> Option<QuantizeFn> {
    Some(match vt {
        QuantType::Q8_0 => quantize_q8::<false>,
        QuantType::Q8_1 => quantize_q8::<true>,
        _ => return None,
    })
}
