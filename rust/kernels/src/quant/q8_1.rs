//! Q8_1: Q8_0 plus `s = d * sum(qs)` (9 bits per weight). Mirrors ggml `block_q8_1`. Only used
//! as the activation format of Q4_1 and Q5_1, whose min term `m * sum(x)` it makes one multiply.

use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK8_1: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// scale
    pub d: f16,
    /// d * sum(qs[i])
    pub s: f16,
    /// quants
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// Reference dequantization (`x = d * qs`; `s` is redundant).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 36 * QK8_1, dst.len());
    for (b, y) in super::blocks::<BlockQ8_1>(src).zip(dst.chunks_exact_mut(QK8_1)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = f32::from(q) * d;
        }
    }
}

/// Reference quantization (ggml `quantize_row_q8_1_ref`, rounding half to even like Q8_0's).
pub fn quantize(x: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(x.len() / QK8_1 * 36, dst.len());
    for (x, out) in x.chunks_exact(QK8_1).zip(dst.chunks_exact_mut(36)) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (o, &v) in out[4..].iter_mut().zip(x) {
            let q = (v * id).round_ties_even() as i8;
            sum += i32::from(q);
            *o = q as u8;
        }
        out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        out[2..4].copy_from_slice(&f16::from_f32(sum as f32 * d).to_le_bytes());
    }
}
