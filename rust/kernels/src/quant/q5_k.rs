//! Q5_K: Q4_K plus a fifth bit per value in `qh` (5.5 bits per weight). Mirrors ggml
//! `block_q5_K`. Dots against Q8_K activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q4_k::{scales_mins, K_SCALE_SIZE};
use super::q8_k::BlockQ8_K;
use super::QK_K;

/// `x = (d * sc[j]) * q - (dmin * m[j])` for sub-block `j = i / 32`, `q` in 0..=31.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_K {
    /// super-block scale of the quantized scales
    pub d: f16,
    /// super-block scale of the quantized mins
    pub dmin: f16,
    /// 8 scales and 8 mins, 6 bits each (as Q4_K)
    pub scales: [u8; K_SCALE_SIZE],
    /// fifth bits: bit `b` of byte `l` belongs to element `32b + l`
    pub qh: [u8; QK_K / 8],
    /// low nibbles, as Q4_K
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == 176);

impl BlockQ5_K {
    /// The 256 unsigned quants (0..=31) in element order.
    #[inline]
    pub fn quants(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for c in 0..4 {
            for l in 0..32 {
                let b = self.qs[32 * c + l];
                let (e0, e1) = (64 * c + l, 64 * c + 32 + l);
                q[e0] = (b & 0x0F) | (((self.qh[l] >> (2 * c)) & 1) << 4);
                q[e1] = (b >> 4) | (((self.qh[l] >> (2 * c + 1)) & 1) << 4);
            }
        }
        q
    }
}

/// Reference dequantization, bit-exact with `gguf.quants.Q5_K` (`(d * sc) * q - (dmin * m)`).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 176 * QK_K, dst.len());
    for (b, y) in super::blocks::<BlockQ5_K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        let (sc, m) = scales_mins(&b.scales);
        let q = b.quants();
        for j in 0..8 {
            let (dl, ml) = (d * f32::from(sc[j]), dmin * f32::from(m[j]));
            for (y, &q) in y[32 * j..32 * j + 32]
                .iter_mut()
                .zip(&q[32 * j..32 * j + 32])
            {
                *y = dl * f32::from(q) - ml;
            }
        }
    }
}

/// Reference dot with Q8_K activations (ggml `ggml_vec_dot_q5_K_q8_K_generic`), same scheme as
/// Q4_K.
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 176, x.len() / 292);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ5_K>(w).zip(super::blocks::<BlockQ8_K>(x)) {
        let (sc, m) = scales_mins(&a.scales);
        let q = a.quants();
        let mut isum = 0i32;
        for j in 0..8 {
            let s: i32 = q[32 * j..32 * j + 32]
                .iter()
                .zip(&b.qs[32 * j..32 * j + 32])
                .map(|(&q, &y)| i32::from(q) * i32::from(y))
                .sum();
            isum += i32::from(sc[j]) * s;
        }
        let msum: i32 = (0..8)
            .map(|j| i32::from(m[j]) * (i32::from(b.bsums[2 * j]) + i32::from(b.bsums[2 * j + 1])))
            .sum();
        sumf += a.d.to_f32() * b.d * isum as f32 - a.dmin.to_f32() * b.d * msum as f32;
    }
    sumf
}
