//! hologram-kernels: quantized tensor formats and the CPU kernels over them (dequantize, dot,
//! matmul) with runtime ISA dispatch. Knows nothing of models, files or Python.

pub mod quant;

pub use quant::QuantType;
