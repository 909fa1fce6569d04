//! AVX-512 (F/BW/VL) + VNNI kernels (x86-64). Same function names as `x86_avx2.rs`.
//!
//! Integer dots use `vpdpbusd` (u8 x i8, 4-way, into i32, no saturation). All weight formats are
//! brought to *unsigned* bytes `u` with a per-format zero point `off` (Q4_0: 8, Q5_0: 16,
//! Q8_0: 128 via `w ^ 0x80`, Q4_1/Q5_1: 0), so `sum((u - off) * y) = dpbusd(u, y) - off*sum(y)`,
//! which is exact in i32. The activation-side term does not depend on the weight row, so the
//! prefill GEMM (`gemm_*`) computes it once per activation block and shares it across 16 rows.
//!
//! GEMM layout: a task repacks 16 weight rows into a thread-local buffer where, per block,
//! zmm `j` (j = 0..8) holds bytes 4j..4j+4 of each of the 16 rows (lane = row), followed by the
//! 16 row scales `d` and mins `m` as f32. Then, for each token, 8 `vpdpbusd` with a broadcast
//! 4-byte activation group produce the 16 rows' block dots in one register: scaling costs one
//! cvt + mul + fma per 16 row-blocks and results are stored without horizontal sums. Repacking
//! costs O(rows x cols) once per matmul and is amortized over all tokens.
//!
//! Every fn is `unsafe`: callers guarantee `Isa::Avx512.is_available()` and block-exact lengths.

use std::arch::x86_64::*;
use std::cell::RefCell;

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

// ------------------------------------------------------------------------------------------
// Prefill GEMM: 16 interleaved rows x NT tokens.

/// Rows per interleaved group (zmm lanes).
pub(crate) const GEMM_ROWS: usize = 16;
/// u32 words per packed block: 8x16 quant dwords, 16 d, 16 m.
const PACK_WORDS: usize = 8 * 16 + 16 + 16;
/// Tokens per register tile.
const NT: usize = 8;

thread_local! {
    /// Per-thread repack buffer for one 16-row group (grows to the largest `cols`, then reused).
    static PACK: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Per-token activation side data, shared by all row groups: for token t and block b at
/// `t * nb + b`: the activation scale, the exact integer sum of its quants, and (Q8_1) `s`.
pub(crate) struct ActSide<'a> {
    pub d: &'a [f32],
    pub qsum: &'a [i32],
    pub s: &'a [f32],
}

/// Repack `nrows` (<= 16) rows of `T` starting at `w` (row stride `rb`) into `pack`.
///
/// # Safety
/// AVX-512; `w` holds `nrows * rb` bytes of whole blocks; `pack.len() >= nb * PACK_WORDS`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_rows<const T: u32>(w: &[u8], rb: usize, nrows: usize, nb: usize, pack: &mut [u32]) {
    let f = const { fmt(T) };
    debug_assert!(nrows <= GEMM_ROWS && w.len() >= nrows * rb && pack.len() >= nb * PACK_WORDS);
    let mut tmp = [0u32; 8];
    for b in 0..nb {
        let blk = &mut pack[b * PACK_WORDS..(b + 1) * PACK_WORDS];
        for r in 0..GEMM_ROWS {
            if r < nrows {
                // SAFETY: row r < nrows, block b < nb: the block lies inside w.
                let (u, d, m) = unsafe {
                    let p = w.as_ptr().add(r * rb + b * f.bytes);
                    let m = if f.has_m { f16_at(p.add(2)) } else { 0.0 };
                    (uquants::<T>(p), f16_at(p), m)
                };
                // SAFETY: tmp is 32 bytes.
                unsafe { _mm256_storeu_si256(tmp.as_mut_ptr().cast(), u) };
                for (j, &v) in tmp.iter().enumerate() {
                    blk[j * 16 + r] = v;
                }
                blk[128 + r] = d.to_bits();
                blk[144 + r] = m.to_bits();
            } else {
                for j in 0..8 {
                    blk[j * 16 + r] = 0;
                }
                blk[128 + r] = 0;
                blk[144 + r] = 0;
            }
        }
    }
}

/// One register tile: 16 packed rows x `N` tokens starting at token `t0`.
///
/// # Safety
/// AVX-512+VNNI; `pack` holds `nb` packed blocks; `xq` holds tokens `t0..t0+N` (row stride
/// `xrb`, block stride `xb`, quants at `xq_off`); `side` covers them; `out + t*ldo + 0..nvalid`
/// writable for t < N.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const T: u32, const N: usize>(
    pack: &[u32],
    nb: usize,
    xq: &[u8],
    xrb: usize,
    side: &ActSide<'_>,
    t0: usize,
    out: *mut f32,
    ldo: usize,
    nvalid: usize,
) {
    let f = const { fmt(T) };
    let off = const { uoff(T) };
    let xb = if f.has_m { 36 } else { 34 };
    let xq_off = if f.has_m { 4 } else { 2 };
    debug_assert!(pack.len() >= nb * PACK_WORDS && xq.len() >= (t0 + N) * xrb);
    debug_assert!(side.d.len() >= (t0 + N) * nb);
    let mut acc = [_mm512_setzero_ps(); N];
    let pp = pack.as_ptr();
    for b in 0..nb {
        // SAFETY: b < nb packed blocks of PACK_WORDS u32 each.
        let (wv, dv, mv) = unsafe {
            let p = pp.add(b * PACK_WORDS);
            let wv: [__m512i; 8] =
                core::array::from_fn(|j| _mm512_loadu_si512(p.add(16 * j).cast()));
            (
                wv,
                _mm512_loadu_ps(p.add(128).cast()),
                _mm512_loadu_ps(p.add(144).cast()),
            )
        };
        for (t, a) in acc.iter_mut().enumerate() {
            let si = (t0 + t) * nb + b;
            let mut ia = _mm512_set1_epi32(-off * side.qsum[si]);
            // SAFETY: token t0+t < t0+N, block b < nb: 32 quant bytes at this offset are in xq.
            let px = unsafe { xq.as_ptr().add((t0 + t) * xrb + b * xb + xq_off) };
            for (j, w) in wv.iter().enumerate() {
                // SAFETY: j < 8, so bytes 4j..4j+4 of the 32 quants.
                let g = unsafe { px.add(4 * j).cast::<i32>().read_unaligned() };
                ia = _mm512_dpbusd_epi32(ia, *w, _mm512_set1_epi32(g));
            }
            let sc = _mm512_mul_ps(dv, _mm512_set1_ps(side.d[si]));
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), sc, *a);
            if f.has_m {
                *a = _mm512_fmadd_ps(mv, _mm512_set1_ps(side.s[si]), *a);
            }
        }
    }
    let mask: __mmask16 = if nvalid >= 16 {
        0xFFFF
    } else {
        (1u16 << nvalid) - 1
    };
    for (t, a) in acc.iter().enumerate() {
        // SAFETY: the caller guarantees out + t*ldo + 0..nvalid writable; masked lanes untouched.
        unsafe { _mm512_mask_storeu_ps(out.add(t * ldo), mask, *a) };
    }
}

/// GEMM of `nrows` (<= 16) weight rows against all `n_tok` quantized tokens:
/// `out[t * ldo + r] = dot(w[r], x[t])`.
///
/// # Safety
/// AVX-512+VNNI; `w` holds `nrows` rows of `rb` bytes (`nb` blocks of `T`); `xq` holds `n_tok`
/// activation rows of `xrb` bytes in `T`'s vec_dot_type; `side` covers `n_tok * nb`;
/// `out + t*ldo + r` is writable (and written by no one else) for t < n_tok, r < nrows.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemm_q<const T: u32>(
    w: &[u8],
    rb: usize,
    nrows: usize,
    nb: usize,
    xq: &[u8],
    xrb: usize,
    side: &ActSide<'_>,
    n_tok: usize,
    out: *mut f32,
    ldo: usize,
) {
    PACK.with(|cell| {
        let mut pack = cell.borrow_mut();
        if pack.len() < nb * PACK_WORDS {
            pack.resize(nb * PACK_WORDS, 0);
        }
        // SAFETY: forwarded caller guarantees; pack sized just above.
        unsafe { pack_rows::<T>(w, rb, nrows, nb, &mut pack) };
        let mut t0 = 0;
        while t0 < n_tok {
            let n = (n_tok - t0).min(NT);
            // SAFETY: tokens t0..t0+n < n_tok; out rows t0..t0+n per the caller's guarantee.
            unsafe {
                let o = out.add(t0 * ldo);
                match n {
                    8 => tile::<T, 8>(&pack, nb, xq, xrb, side, t0, o, ldo, nrows),
                    7 => tile::<T, 7>(&pack, nb, xq, xrb, side, t0, o, ldo, nrows),
                    6 => tile::<T, 6>(&pack, nb, xq, xrb, side, t0, o, ldo, nrows),
                    5 => tile::<T, 5>(&pack, nb, xq, xrb, side, t0, o, ldo, nrows),
                    4 => tile::<T, 4>(&pack, nb, xq, xrb, side, t0, o, ldo, nrows),
                    3 => tile::<T, 3>(&pack, nb, xq, xrb, side, t0, o, ldo, nrows),
                    2 => tile::<T, 2>(&pack, nb, xq, xrb, side, t0, o, ldo, nrows),
                    _ => tile::<T, 1>(&pack, nb, xq, xrb, side, t0, o, ldo, nrows),
                }
            }
            t0 += n;
        }
    });
}

/// See [`gemm_q`] for the contract.
pub(crate) type GemmFn =
    unsafe fn(&[u8], usize, usize, usize, &[u8], usize, &ActSide<'_>, usize, *mut f32, usize);

pub(crate) fn gemm_fn(t: QuantType) -> Option<GemmFn> {
    Some(match t {
        QuantType::Q4_0 => gemm_q::<Q4_0>,
        QuantType::Q4_1 => gemm_q::<Q4_1>,
        QuantType::Q5_0 => gemm_q::<Q5_0>,
        QuantType::Q5_1 => gemm_q::<Q5_1>,
        QuantType::Q8_0 => gemm_q::<Q8_0>,
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

pub(super) fn quantize_fn(vt: QuantType) -> Option<QuantizeFn> {
    Some(match vt {
        QuantType::Q8_0 => quantize_q8::<false>,
        QuantType::Q8_1 => quantize_q8::<true>,
        _ => return None,
    })
}
