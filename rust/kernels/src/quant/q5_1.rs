//! Q5_1: 32 5-bit values, f16 scale and f16 min (6 bits per weight). Mirrors ggml `block_q5_1`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_1::BlockQ8_1;

pub const QK5_1: usize = 32;

/// `x[i] = d * q[i] + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// scale
    pub d: f16,
    /// min
    pub m: f16,
    /// fifth bits (u32 little-endian)
    pub qh: [u8; 4],
    /// low nibbles
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl BlockQ5_1 {
    /// The 32 unsigned quants (0..=31).
    #[inline]
    pub fn quants(&self) -> [u8; QK5_1] {
        let qh = u32::from_le_bytes(self.qh);
        let mut q = [0u8; QK5_1];
        for j in 0..QK5_1 / 2 {
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            q[j] = (self.qs[j] & 0x0F) | (h0 << 4);
            q[j + 16] = (self.qs[j] >> 4) | (h1 << 4);
        }
        q
    }
}

/// Reference dequantization (`gguf.quants.Q5_1`: `d * q + m`, no FMA).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 24 * QK5_1, dst.len());
    for (b, y) in super::blocks::<BlockQ5_1>(src).zip(dst.chunks_exact_mut(QK5_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (y, q) in y.iter_mut().zip(b.quants()) {
            *y = d * f32::from(q) + m;
        }
    }
}

/// Reference dot with Q8_1 activations (ggml `ggml_vec_dot_q5_1_q8_1_generic`).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 24, x.len() / 36);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ5_1>(w).zip(super::blocks::<BlockQ8_1>(x)) {
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
