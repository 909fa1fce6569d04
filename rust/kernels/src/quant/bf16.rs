//! BF16 tensors: the top 16 bits of an IEEE binary32, "blocks" of one element.
//! Dequantization is a shift (as `gguf.quants.BF16`); dot against f32 activations.

/// Bytes per element.
pub const TYPE_SIZE: usize = 2;

#[inline]
fn get(b: &[u8], i: usize) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])) << 16)
}

#[inline]
fn get_f32(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Reference dequantization (exact).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len() * TYPE_SIZE);
    for (i, y) in dst.iter_mut().enumerate() {
        *y = get(src, i);
    }
}

/// Reference dot of a BF16 row with f32 activations (`x` as little-endian f32 bytes).
pub fn vec_dot(w: &[u8], x: &[u8]) -> f32 {
    debug_assert_eq!(w.len() * 2, x.len());
    (0..w.len() / TYPE_SIZE)
        .map(|i| get(w, i) * get_f32(x, i))
        .sum()
}
