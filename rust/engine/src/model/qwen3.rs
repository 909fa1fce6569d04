//! qwen3 (llama.cpp `src/models/qwen3.cpp`): Qwen3 dense files.
//!
//! The qwen2 layer with per-head RMSNorm of q and k before RoPE NEOX (and no q/k/v biases in
//! the released models; a file's biases are applied if present). The head size is usually set
//! apart from n_embd / n_head (`attention.key_length`). Loaded by the shared qwen loader.

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::model::config::Arch;
use crate::model::decoder::DecoderModel;

pub(crate) fn load(f: &GgufFile, n_vocab: usize) -> Result<DecoderModel> {
    super::qwen2::load_qwen(f, n_vocab, Arch::Qwen3)
}
