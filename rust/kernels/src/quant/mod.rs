//! Tensor element formats: GGML type ids, block sizes and byte sizes, in one table.
//! Mirrors ggml's `type_traits` (ggml/src/ggml.c) for the types hologram knows.
//!
//! One file per format below holds its `#[repr(C)]` block (ggml field names, size asserted at
//! compile time), the scalar reference `dequantize` and the scalar reference `vec_dot` against
//! the format's activation type ([`QuantType::vec_dot_type`]). These references are kept forever;
//! every SIMD path in `crate::simd` is tested against them. K-quants slot in as more files here
//! plus arms in `crate::simd` dispatch.

pub mod bf16;
pub mod fp16;
pub mod fp32;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

/// Iterate the blocks of type `B` in `src` (read unaligned: GGUF rows need not be 2-aligned
/// when they come from Python buffers). A trailing partial block is ignored.
#[inline]
pub(crate) fn blocks<B: bytemuck::Pod>(src: &[u8]) -> impl Iterator<Item = B> + '_ {
    src.chunks_exact(std::mem::size_of::<B>())
        .map(bytemuck::pod_read_unaligned::<B>)
}

/// A GGML tensor type. Discriminants are the GGUF/GGML type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(non_camel_case_types)]
pub enum QuantType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
}

/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;

impl QuantType {
    pub const ALL: [QuantType; 15] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q8_1,
        QuantType::Q2_K,
        QuantType::Q3_K,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::Q8_K,
        QuantType::BF16,
    ];

    /// The type for a GGML type id, or None for ids hologram does not know (including the
    /// removed ids 4 and 5 and anything past GGML_TYPE_COUNT).
    pub fn from_ggml_id(id: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| *t as u32 == id)
    }

    pub fn ggml_id(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "F32",
            QuantType::F16 => "F16",
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q5_0 => "Q5_0",
            QuantType::Q5_1 => "Q5_1",
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q8_1 => "Q8_1",
            QuantType::Q2_K => "Q2_K",
            QuantType::Q3_K => "Q3_K",
            QuantType::Q4_K => "Q4_K",
            QuantType::Q5_K => "Q5_K",
            QuantType::Q6_K => "Q6_K",
            QuantType::Q8_K => "Q8_K",
            QuantType::BF16 => "BF16",
        }
    }

    /// The format activations are converted to before a dot product with a row of this type
    /// (ggml `type_traits_cpu[t].vec_dot_type`), except that F16/BF16 dot against f32.
    pub fn vec_dot_type(self) -> QuantType {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => QuantType::F32,
            QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => QuantType::Q8_0,
            QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q8_1 => QuantType::Q8_1,
            QuantType::Q2_K
            | QuantType::Q3_K
            | QuantType::Q4_K
            | QuantType::Q5_K
            | QuantType::Q6_K
            | QuantType::Q8_K => QuantType::Q8_K,
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q4_0
            | QuantType::Q4_1
            | QuantType::Q5_0
            | QuantType::Q5_1
            | QuantType::Q8_0
            | QuantType::Q8_1 => 32,
            QuantType::Q2_K
            | QuantType::Q3_K
            | QuantType::Q4_K
            | QuantType::Q5_K
            | QuantType::Q6_K
            | QuantType::Q8_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q8_1 => 36,
            QuantType::Q2_K => 84,
            QuantType::Q3_K => 110,
            QuantType::Q4_K => 144,
            QuantType::Q5_K => 176,
            QuantType::Q6_K => 210,
            QuantType::Q8_K => 292,
        }
    }

    /// Bytes of a row of `n` elements, or None if `n` is not a whole number of blocks or the
    /// size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }
}
