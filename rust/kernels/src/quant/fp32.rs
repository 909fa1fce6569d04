//! F32 tensors: plain little-endian IEEE-754 binary32, "blocks" of one element.
//! Dot against f32 activations (ggml would use F32 as vec_dot_type too).

/// Bytes per element.
pub const TYPE_SIZE: usize = 4;

#[inline]
fn get(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Reference dequantization: `src` holds `dst.len()` f32 values.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len() * TYPE_SIZE);
    for (i, y) in dst.iter_mut().enumerate() {
        *y = get(src, i);
    }
}

/// Reference dot of an F32 row with f32 activations (`x` as little-endian f32 bytes).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    (0..w.len() / TYPE_SIZE)
        .map(|i| get(w, i) * get(x, i))
        .sum()
}
