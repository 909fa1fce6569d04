//! Q5_0: 32 5-bit values (low nibbles in `qs`, fifth bits in `qh`), f16 scale, zero point 16
//! (5.5 bits per weight). Mirrors ggml `block_q5_0`. Bit `j` of little-endian `qh` is element `j`'s.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_0::BlockQ8_0;

pub const QK5_0: usize = 32;

/// `x[i] = d * (q[i] - 16)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// scale
    pub d: f16,
    /// fifth bits (u32 little-endian)
    pub qh: [u8; 4],
    /// low nibbles
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

impl BlockQ5_0 {
    /// The 32 signed quants `q - 16`.
    #[inline]
    pub fn quants(&self) -> [i8; QK5_0] {
        let qh = u32::from_le_bytes(self.qh);
        let mut q = [0i8; QK5_0];
        for j in 0..QK5_0 / 2 {
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            q[j] = ((self.qs[j] & 0x0F) | (h0 << 4)) as i8 - 16;
            q[j + 16] = ((self.qs[j] >> 4) | (h1 << 4)) as i8 - 16;
        }
        q
    }
}

/// Reference dequantization (`gguf.quants.Q5_0`).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 22 * QK5_0, dst.len());
    for (b, y) in super::blocks::<BlockQ5_0>(src).zip(dst.chunks_exact_mut(QK5_0)) {
        let d = b.d.to_f32();
        for (y, q) in y.iter_mut().zip(b.quants()) {
            *y = d * f32::from(q);
        }
    }
}

/// Reference dot with Q8_0 activations (ggml `ggml_vec_dot_q5_0_q8_0_generic`).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 22, x.len() / 34);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ5_0>(w).zip(super::blocks::<BlockQ8_0>(x)) {
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
