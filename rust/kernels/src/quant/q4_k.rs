//! Q4_K: super-blocks of 256 4-bit values in 8 sub-blocks of 32, each with a 6-bit scale and a
//! 6-bit min, scaled by the f16 super-block `d` / `dmin` (4.5 bits per weight). Mirrors ggml
//! `block_q4_K`. Dots against Q8_K activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_k::BlockQ8_K;
use super::QK_K;

/// Bytes of the packed 6-bit scales and mins of Q4_K / Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// `x = (d * sc[j]) * q - (dmin * m[j])` for sub-block `j = i / 32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_K {
    /// super-block scale of the quantized scales
    pub d: f16,
    /// super-block scale of the quantized mins
    pub dmin: f16,
    /// 8 scales and 8 mins, 6 bits each
    pub scales: [u8; K_SCALE_SIZE],
    /// nibbles: byte `32c + l` holds element `64c + l` (low) and `64c + 32 + l` (high)
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 144);

/// Unpack the 8 scales and 8 mins (ggml `get_scale_min_k4`, gguf `Q4_K.get_scale_min`).
#[inline]
pub fn scales_mins(s: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        m[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, m)
}

impl BlockQ4_K {
    /// The 256 unsigned quants (0..=15) in element order.
    #[inline]
    pub fn quants(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for c in 0..4 {
            for l in 0..32 {
                let b = self.qs[32 * c + l];
                q[64 * c + l] = b & 0x0F;
                q[64 * c + 32 + l] = b >> 4;
            }
        }
        q
    }
}

/// Reference dequantization, bit-exact with `gguf.quants.Q4_K` (`(d * sc) * q - (dmin * m)`,
/// each product rounded to f32, no FMA).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 144 * QK_K, dst.len());
    for (b, y) in super::blocks::<BlockQ4_K>(src).zip(dst.chunks_exact_mut(QK_K)) {
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

/// Reference dot with Q8_K activations (ggml `ggml_vec_dot_q4_K_q8_K_generic`): exact integer
/// sums per super-block, then `d * y.d * sum(sc * q.y) - dmin * y.d * sum(m * bsums)`.
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 144, x.len() / 292);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ4_K>(w).zip(super::blocks::<BlockQ8_K>(x)) {
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
