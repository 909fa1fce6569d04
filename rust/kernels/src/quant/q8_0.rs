//! Q8_0: 32 int8 values and one f16 scale (8.5 bits per weight). Mirrors ggml `block_q8_0`
//! (ggml/src/ggml-common.h). Also the activation format ("vec_dot_type") of Q4_0, Q5_0, Q8_0.

use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK8_0: usize = 32;

/// `x[i] = d * qs[i]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// scale
    pub d: f16,
    /// quants
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// Reference dequantization (`gguf.quants.Q8_0`: `x * d` in f32).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 34 * QK8_0, dst.len());
    for (b, y) in super::blocks::<BlockQ8_0>(src).zip(dst.chunks_exact_mut(QK8_0)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = f32::from(q) * d;
        }
    }
}

/// Reference quantization of activations, ggml `quantize_row_q8_0_ref` except that it rounds
/// half to even (what the SIMD paths do with `cvtps_epi32`), so every ISA produces identical bytes.
pub fn quantize(x: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(x.len() / QK8_0 * 34, dst.len());
    for (x, out) in x.chunks_exact(QK8_0).zip(dst.chunks_exact_mut(34)) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (o, &v) in out[2..].iter_mut().zip(x) {
            *o = (v * id).round_ties_even() as i8 as u8;
        }
    }
}

/// Reference dot of a Q8_0 row with Q8_0 activations (ggml `ggml_vec_dot_q8_0_q8_0_generic`).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ8_0>(w).zip(super::blocks::<BlockQ8_0>(x)) {
        let sumi: i32 =
            a.qs.iter()
                .zip(b.qs.iter())
                .map(|(&p, &q)| i32::from(p) * i32::from(q))
                .sum();
        sumf += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sumf
}
