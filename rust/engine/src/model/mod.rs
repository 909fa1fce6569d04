//! Model architectures. `config` turns GGUF metadata into validated hyper-parameters;
//! `decoder` is the decoder-only transformer (llama, gemma3) over the KV block pool.

pub mod attention;
pub mod bert;
pub mod config;
pub mod decoder;
pub mod weights;

pub use config::{Arch, ModelConfig};
pub use decoder::{DecoderModel, Output, Row, Scratch};
