//! Q4_0: 32 4-bit values and one f16 scale, zero point 8 (4.5 bits per weight). Mirrors ggml
//! `block_q4_0`. Element `j` is the low nibble of `qs[j]`, element `j + 16` its high nibble.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_0::BlockQ8_0;

pub const QK4_0: usize = 32;

/// `x[i] = d * (q[i] - 8)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// scale
    pub d: f16,
    /// nibbles
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl BlockQ4_0 {
    /// The 32 signed quants `q - 8`.
    #[inline]
    pub fn quants(&self) -> [i8; QK4_0] {
        let mut q = [0i8; QK4_0];
        for j in 0..QK4_0 / 2 {
            q[j] = (self.qs[j] & 0x0F) as i8 - 8;
            q[j + 16] = (self.qs[j] >> 4) as i8 - 8;
        }
        q
    }
}

/// Reference dequantization (`gguf.quants.Q4_0`: `d * (q - 8)` in f32).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 18 * QK4_0, dst.len());
    for (b, y) in super::blocks::<BlockQ4_0>(src).zip(dst.chunks_exact_mut(QK4_0)) {
        let d = b.d.to_f32();
        for (y, q) in y.iter_mut().zip(b.quants()) {
            *y = d * f32::from(q);
        }
    }
}

/// Reference dot with Q8_0 activations (ggml `ggml_vec_dot_q4_0_q8_0_generic`).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 18, x.len() / 34);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ4_0>(w).zip(super::blocks::<BlockQ8_0>(x)) {
        let sumi: i32 = a
            .quants()
            .iter()
            .zip(b.qs.iter())
            .map(|(&p, &q)| i32::from(p) * i32::from(q))
            .sum();
        sumf += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sumf
}
