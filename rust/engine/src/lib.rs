//! hologram-engine: GGUF loading, tokenizers, model architectures, the KV-cache block pool and
//! sampling. Imports the kernels crate; never Python, never HTTP.

pub mod error;
pub mod gguf;
pub mod sample;
pub mod tokenizer;

pub use error::{EngineError, Result};
