//! Q8_K: 256 int8 values, an f32 scale and 16 partial sums (9.125 bits per weight). Mirrors ggml
//! `block_q8_K` (ggml/src/ggml-common.h). Only used as the activation format ("vec_dot_type") of
//! the K-quants; `bsums` lets the min / offset terms of the weight formats be one multiply per
//! 16 values.

use bytemuck::{Pod, Zeroable};

use super::QK_K;

/// `x[i] = d * qs[i]`; `bsums[j] = sum(qs[16 j .. 16 j + 16])`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_K {
    /// scale
    pub d: f32,
    /// quants
    pub qs: [i8; QK_K],
    /// sums of groups of 16 quants
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == 292);

/// Bytes of one block.
pub const BYTES: usize = 292;

/// `v` rounded half to even and converted like x86 `cvtps2dq` (NaN / out of range -> i32::MIN),
/// then saturated to i8 like `packssdw` + `packsswb` after a `min(127)`. For finite inputs this
/// is ggml's `MIN(127, nearest_int(v))`; defining the non-finite cases makes every ISA produce
/// the same bytes for any input.
#[inline]
pub(crate) fn round_q8(v: f32) -> i8 {
    let r = v.round_ties_even();
    let i = if (-2_147_483_648.0..2_147_483_648.0).contains(&r) {
        r as i32
    } else {
        i32::MIN
    };
    i.clamp(-128, 127) as i8
}

/// Reference quantization of activations (ggml `quantize_row_q8_K_ref`): the value of largest
/// magnitude (first one on ties) maps to -127, `d = 1 / iscale`.
pub fn quantize(x: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(x.len() / QK_K * BYTES, dst.len());
    for (x, out) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(BYTES)) {
        let mut b = BlockQ8_K::zeroed();
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax != 0.0 {
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = round_q8(iscale * v);
            }
            for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| i16::from(v)).sum();
            }
            b.d = 1.0 / iscale;
        }
        out.copy_from_slice(bytemuck::bytes_of(&b));
    }
}

/// Reference dequantization (`d * qs`); not a weight format, used by tests.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / BYTES * QK_K, dst.len());
    for (b, y) in super::blocks::<BlockQ8_K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = b.d * f32::from(q);
        }
    }
}
