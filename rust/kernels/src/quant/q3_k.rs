//! Q3_K: super-blocks of 256 3-bit values (2 low bits in `qs`, the high bit in `hmask`) in 16
//! sub-blocks of 16 with 6-bit signed scales and one f16 super-block scale (3.4375 bits per
//! weight). Mirrors ggml `block_q3_K`. Dots against Q8_K activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_k::BlockQ8_K;
use super::QK_K;

/// `x = (d * (sc[i / 16] - 32)) * q` with `q = low2 - (high bit clear ? 4 : 0)` in -4..=3.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3_K {
    /// high bits: bit `b` of byte `l` belongs to element `32b + l` (set = no offset)
    pub hmask: [u8; QK_K / 8],
    /// low 2 bits: bits `2s..2s+2` of byte `32h + l` belong to element `128h + 32s + l`
    pub qs: [u8; QK_K / 4],
    /// 16 scales, 6 bits each
    pub scales: [u8; 12],
    /// super-block scale
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3_K>() == 110);

/// Unpack the 16 signed scales (`6-bit value - 32`), as gguf `Q3_K.dequantize_blocks`.
#[inline]
pub fn scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (k, o) in out.iter_mut().enumerate() {
        let lo = (s[k % 8] >> (4 * (k / 8))) & 0x0F;
        let hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        *o = (lo | (hi << 4)) as i8 - 32;
    }
    out
}

impl BlockQ3_K {
    /// The 256 signed quants (-4..=3) in element order.
    #[inline]
    pub fn quants(&self) -> [i8; QK_K] {
        let mut q = [0i8; QK_K];
        for h in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    let e = 128 * h + 32 * s + l;
                    let low = ((self.qs[32 * h + l] >> (2 * s)) & 3) as i8;
                    let high = (self.hmask[l] >> (e / 32)) & 1;
                    q[e] = low - if high == 0 { 4 } else { 0 };
                }
            }
        }
        q
    }
}

/// Reference dequantization, bit-exact with `gguf.quants.Q3_K` (`(d * sc) * q`).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len() / 110 * QK_K, dst.len());
    for (b, y) in super::blocks::<BlockQ3_K>(src).zip(dst.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let sc = scales(&b.scales);
        let q = b.quants();
        for j in 0..16 {
            let dl = d * f32::from(sc[j]);
            for (y, &q) in y[16 * j..16 * j + 16]
                .iter_mut()
                .zip(&q[16 * j..16 * j + 16])
            {
                *y = dl * f32::from(q);
            }
        }
    }
}

/// Reference dot with Q8_K activations (ggml `ggml_vec_dot_q3_K_q8_K_generic`).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() / 110, x.len() / 292);
    let mut sumf = 0.0f32;
    for (a, b) in super::blocks::<BlockQ3_K>(w).zip(super::blocks::<BlockQ8_K>(x)) {
        let sc = scales(&a.scales);
        let q = a.quants();
        let mut isum = 0i32;
        for j in 0..16 {
            let s: i32 = q[16 * j..16 * j + 16]
                .iter()
                .zip(&b.qs[16 * j..16 * j + 16])
                .map(|(&q, &y)| i32::from(q) * i32::from(y))
                .sum();
            isum += i32::from(sc[j]) * s;
        }
        sumf += a.d.to_f32() * b.d * isum as f32;
    }
    sumf
}
