//! Q6_K: super-blocks of 256 6-bit values in 16 sub-blocks of 16 with int8 scales and one f16
//! super-block scale (6.5625 bits per weight). Mirrors ggml `block_q6_K`. Dots against Q8_K.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_k::BlockQ8_K;
use super::QK_K;

/// `x = (d * scales[i / 16]) * (q - 32)`, `q` in 0..=63.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6_K {
    /// low 4 bits: byte `64h + m` holds element `128h + m` (low) and `128h + 64 + m` (high)
    pub ql: [u8; QK_K / 2],
    /// high 2 bits: bits `2s..2s+2` of byte `32h + l` belong to element `128h + 32s + l`
    pub qh: [u8; QK_K / 4],
    /// sub-block scales
    pub scales: [i8; QK_K / 16],
    /// super-block scale
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == 210);

impl BlockQ6_K {
    /// The 256 signed quants (-32..=31) in element order.
    #[inline]
    pub fn quants(&self) -> [i8; QK_K] {
        let mut q = [0i8; QK_K];
        for h in 0..2 {
            for l in 0..32 {
                let hb = self.qh[32 * h + l];
                let (l0, l1) = (self.ql[64 * h + l], self.ql[64 * h + 32 + l]);
                let e = 128 * h + l;
                q[e] = ((l0 & 0x0F) | ((hb & 3) << 4)) as i8 - 32;
                q[e + 32] = ((l1 & 0x0F) | (((hb >> 2) & 3) << 4)) as i8 - 32;
                q[e + 64] = ((l0 >> 4) | (((hb >> 4) & 3) << 4)) as i8 - 32;
                q[e + 96] = ((l1 >> 4) | (((hb >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        q
    }
}

/// Reference dequantization, bit-exact with `gguf.quants.Q6_K` (`(d * sc) * q`).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 210 * QK_K, dst.len());
    for (b, y) in super::blocks::<BlockQ6_K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let q = b.quants();
        for j in 0..16 {
            let dl = d * f32::from(b.scales[j]);
            for (y, &q) in y[16 * j..16 * j + 16]
                .iter_mut()
                .zip(&q[16 * j..16 * j + 16])
            {
                *y = dl * f32::from(q);
            }
        }
    }
}

/// Reference dot with Q8_K activations (ggml `ggml_vec_dot_q6_K_q8_K_generic`):
/// `d * y.d * sum_j sc[j] * sum(q.y)` with exact integer sums per super-block.
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 210, x.len() / 292);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ6_K>(w).zip(super::blocks::<BlockQ8_K>(x)) {
        let q = a.quants();
        let mut isum = 0i32;
        for j in 0..16 {
            let s: i32 = q[16 * j..16 * j + 16]
                .iter()
                .zip(&b.qs[16 * j..16 * j + 16])
                .map(|(&q, &y)| i32::from(q) * i32::from(y))
                .sum();
            isum += i32::from(a.scales[j]) * s;
        }
        sumf += a.d.to_f32() * b.d * isum as f32;
    }
    sumf
}
