//! Q2_K: super-blocks of 256 2-bit values in 16 sub-blocks of 16, each with a 4-bit scale and a
//! 4-bit min, scaled by the f16 `d` / `dmin` (2.625 bits per weight). Mirrors ggml `block_q2_K`.
//! Dots against Q8_K activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_k::BlockQ8_K;
use super::QK_K;

/// `x = (d * (sc & 15)) * q - (dmin * (sc >> 4))` with `sc = scales[i / 16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2_K {
    /// scale (low nibble) and min (high nibble) per sub-block
    pub scales: [u8; QK_K / 16],
    /// crumbs: bits `2s..2s+2` of byte `32h + l` belong to element `128h + 32s + l`
    pub qs: [u8; QK_K / 4],
    /// super-block scale of the quantized scales
    pub d: f16,
    /// super-block scale of the quantized mins
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2_K>() == 84);

impl BlockQ2_K {
    /// The 256 unsigned quants (0..=3) in element order.
    #[inline]
    pub fn quants(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for h in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    q[128 * h + 32 * s + l] = (self.qs[32 * h + l] >> (2 * s)) & 3;
                }
            }
        }
        q
    }
}

/// Reference dequantization, bit-exact with `gguf.quants.Q2_K`.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 84 * QK_K, dst.len());
    for (b, y) in super::blocks::<BlockQ2_K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        let q = b.quants();
        for j in 0..16 {
            let dl = d * f32::from(b.scales[j] & 0x0F);
            let ml = dmin * f32::from(b.scales[j] >> 4);
            for (y, &q) in y[16 * j..16 * j + 16]
                .iter_mut()
                .zip(&q[16 * j..16 * j + 16])
            {
                *y = dl * f32::from(q) - ml;
            }
        }
    }
}

/// Reference dot with Q8_K activations (ggml `ggml_vec_dot_q2_K_q8_K_generic`).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 84, x.len() / 292);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ2_K>(w).zip(super::blocks::<BlockQ8_K>(x)) {
        let q = a.quants();
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..16 {
            let s: i32 = q[16 * j..16 * j + 16]
                .iter()
                .zip(&b.qs[16 * j..16 * j + 16])
                .map(|(&q, &y)| i32::from(q) * i32::from(y))
                .sum();
            isum += i32::from(a.scales[j] & 0x0F) * s;
            msum += i32::from(a.scales[j] >> 4) * i32::from(b.bsums[j]);
        }
        sumf += a.d.to_f32() * b.d * isum as f32 - a.dmin.to_f32() * b.d * msum as f32;
    }
    sumf
}
