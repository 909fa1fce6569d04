//! GGUF container support: the validating reader (`reader`) and the table of key and tensor names
//! (`keys`). See `reader.rs` for the checks and the tensor-layout policy.

pub mod keys;
pub mod reader;

pub use reader::{
    Array, GgufFile, TensorInfo, Value, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_LEN, MAX_DIMS,
    MAX_STRING_LEN, MAX_TENSOR_NAME_LEN,
};

#[cfg(test)]
mod tests;
