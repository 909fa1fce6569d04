//! F16 tensors: IEEE-754 binary16, "blocks" of one element. Dot against f32 activations
//! (more precise than ggml, which rounds activations to F16 first).

use half::f16;

/// Bytes per element.
pub const TYPE_SIZE: usize = 2;

#[inline]
fn get(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32()
}

#[inline]
fn get_f32(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Reference dequantization (exact: every f16 is an f32).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len() * TYPE_SIZE);
    for (i, y) in dst.iter_mut().enumerate() {
        *y = get(src, i);
    }
}

/// Reference dot of an F16 row with f32 activations (`x` as little-endian f32 bytes).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() * 2, x.len());
    (0..w.len() / TYPE_SIZE)
        .map(|i| get(w, i) * get_f32(x, i))
        .sum()
}
