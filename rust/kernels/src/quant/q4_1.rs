//! Q4_1: 32 4-bit values, f16 scale and f16 min (5 bits per weight). Mirrors ggml `block_q4_1`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_1::BlockQ8_1;

pub const QK4_1: usize = 32;

/// `x[i] = d * q[i] + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// scale
    pub d: f16,
    /// min
    pub m: f16,
    /// nibbles
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl BlockQ4_1 {
    /// The 32 unsigned quants (0..=15).
    #[inline]
    pub fn quants(&self) -> [u8; QK4_1] {
        let mut q = [0u8; QK4_1];
        for j in 0..QK4_1 / 2 {
            q[j] = self.qs[j] & 0x0F;
            q[j + 16] = self.qs[j] >> 4;
        }
        q
    }
}

/// Reference dequantization (`gguf.quants.Q4_1`: `d * q + m`, two f32 roundings, no FMA).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 20 * QK4_1, dst.len());
    for (b, y) in super::blocks::<BlockQ4_1>(src).zip(dst.chunks_exact_mut(QK4_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (y, q) in y.iter_mut().zip(b.quants()) {
            *y = d * f32::from(q) + m;
        }
    }
}

/// Reference dot with Q8_1 activations (ggml `ggml_vec_dot_q4_1_q8_1_generic`).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 20, x.len() / 36);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ4_1>(w).zip(super::blocks::<BlockQ8_1>(x)) {
        let sumi: i32 = a
            .quants()
            .iter()
            .zip(b.qs.iter())
            .map(|(&p, &q)| i32::from(p) * i32::from(q))
            .sum();
        sumf += (a.d.to_f32() * b.d.to_f32()) * sumi as f32 + a.m.to_f32() * b.s.to_f32();
    }
    sumf
}
