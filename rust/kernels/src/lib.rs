//! hologram-kernels: quantized tensor formats and the CPU kernels over them (dequantize, dot,
//! matmul) with runtime ISA dispatch. Knows nothing of models, files or Python.

pub mod error;
pub mod gemm_f32;
pub mod matmul;
pub mod ops;
pub mod packed;
pub mod pool;
pub mod quant;
pub mod simd;

pub use error::KernelError;
pub use gemm_f32::{gemm_f32, gemm_f32_post, gemm_f32_rows, PackedF32, PostOp, RowOp};
pub use matmul::{
    dequantize_row, dequantize_row_isa, matmul, matmul_isa, matmul_multi, matmul_multi_isa,
    quantize_row_isa, vec_dot_f32, MatmulJob,
};
pub use pool::Pool;
pub use quant::QuantType;
pub use simd::Isa;

/// Whether weights of type `t` can be dequantized and multiplied (have a vec-dot kernel).
pub fn supports(t: QuantType) -> bool {
    simd::dequant_fn(Isa::Scalar, t).is_some() && simd::vec_dot_fn(Isa::Scalar, t).is_some()
}
