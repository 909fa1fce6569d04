//! hologram-engine: GGUF loading, tokenizers, model architectures, the KV-cache block pool and
//! sampling. Imports the kernels crate; never Python, never HTTP.

pub mod constraint;
pub mod error;
pub mod gguf;
pub mod sample;
pub mod tokenizer;

pub use error::{EngineError, Result};
pub mod encoder;
pub mod engine;
pub mod kv;
pub mod model;
pub mod processor;

pub use constraint::{Constraint, Grammars};
pub use encoder::{load, Encoder, Loaded};
pub use engine::{
    default_kv_tokens, Engine, EngineOptions, FinishReason, GenParams, Generation, StepOut,
};
pub use processor::{Event, ProcessorHandle, ProcessorOptions, Request, Stats};
