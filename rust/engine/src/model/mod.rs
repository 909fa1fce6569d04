//! Model architectures. `config` turns GGUF metadata into validated hyper-parameters; `blocks`
//! holds the building blocks (norms, attention, feed-forward) as data; `rope` the rotary
//! variants; `decoder` runs any decoder-only model made of them over the KV block pool. Each
//! decoder architecture has its own file (as llama.cpp keeps `src/models/<arch>.cpp`) that reads
//! its hyper-parameters and tensors and composes its layers; `bert` is the encoder.

pub mod attention;
pub mod bert;
pub mod blocks;
pub mod config;
pub mod decoder;
pub mod rope;
pub mod weights;

mod gemma2;
mod gemma3;
mod llama;
mod phi2;
mod phi3;
mod qwen2;
mod qwen3;

pub use config::{Arch, ModelConfig};
pub use decoder::{DecoderModel, Output, Row, Scratch};

use crate::error::Result;
use crate::gguf::GgufFile;

/// What the model depends on beyond the file.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// The longest sequence the engine will run (llama.cpp's `n_ctx_seq`): Phi-3 LongRoPE
    /// chooses its long or short factors by it.
    pub n_ctx: usize,
}

/// Load the decoder architecture `general.architecture` names; an architecture without a file
/// here is an `Unsupported` error naming it and the supported ones.
pub fn load_decoder(f: &GgufFile, n_vocab: usize, opts: &LoadOptions) -> Result<DecoderModel> {
    match config::file_arch(f)? {
        Arch::Llama => llama::load(f, n_vocab),
        Arch::Qwen2 => qwen2::load(f, n_vocab),
        Arch::Qwen3 => qwen3::load(f, n_vocab),
        Arch::Phi2 => phi2::load(f, n_vocab),
        Arch::Phi3 => phi3::load(f, n_vocab, opts),
        Arch::Gemma2 => gemma2::load(f, n_vocab),
        Arch::Gemma3 => gemma3::load(f, n_vocab),
    }
}
