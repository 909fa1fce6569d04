//! Every GGUF metadata key and tensor-name template hologram reads, in one place
//! (ARCHITECTURE.md §3 habit 7; the idea of llama.cpp's `src/llama-arch.cpp` `LLM_KV_NAMES` and
//! `LLM_TENSOR_NAMES`). Code elsewhere never spells a key or tensor name as a literal.
//!
//! Architecture-scoped keys are stored as suffixes and joined with [`arch_key`]:
//! `arch_key("llama", CONTEXT_LENGTH) == "llama.context_length"`.

// ---- general.*
pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
pub const GENERAL_NAME: &str = "general.name";
pub const GENERAL_ALIGNMENT: &str = "general.alignment";
pub const GENERAL_FILE_TYPE: &str = "general.file_type";
pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";

// ---- architecture names (values of general.architecture)
pub const ARCH_LLAMA: &str = "llama";
pub const ARCH_GEMMA3: &str = "gemma3";
pub const ARCH_QWEN2: &str = "qwen2";
pub const ARCH_QWEN3: &str = "qwen3";
pub const ARCH_MISTRAL: &str = "mistral";
pub const ARCH_PHI2: &str = "phi2";
pub const ARCH_PHI3: &str = "phi3";
pub const ARCH_GEMMA2: &str = "gemma2";

// ---- {arch}.* suffixes
pub const CONTEXT_LENGTH: &str = "context_length";
pub const EMBEDDING_LENGTH: &str = "embedding_length";
pub const BLOCK_COUNT: &str = "block_count";
pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
pub const VOCAB_SIZE: &str = "vocab_size";
pub const ATTENTION_HEAD_COUNT: &str = "attention.head_count";
pub const ATTENTION_HEAD_COUNT_KV: &str = "attention.head_count_kv";
pub const ATTENTION_LAYERNORM_RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
pub const ATTENTION_LAYERNORM_EPS: &str = "attention.layer_norm_epsilon";
pub const ATTENTION_KEY_LENGTH: &str = "attention.key_length";
pub const ATTENTION_VALUE_LENGTH: &str = "attention.value_length";
pub const ATTENTION_SLIDING_WINDOW: &str = "attention.sliding_window";
pub const ATTENTION_SLIDING_WINDOW_PATTERN: &str = "attention.sliding_window_pattern";
pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
pub const ROPE_FREQ_BASE_SWA: &str = "rope.freq_base_swa";
pub const ROPE_DIMENSION_COUNT: &str = "rope.dimension_count";
pub const ROPE_SCALE_LINEAR: &str = "rope.scale_linear";
pub const ROPE_SCALING_TYPE: &str = "rope.scaling.type";
pub const ROPE_SCALING_FACTOR: &str = "rope.scaling.factor";
pub const ROPE_SCALING_ATTN_FACTOR: &str = "rope.scaling.attn_factor";
pub const ROPE_SCALING_ORIG_CTX_LEN: &str = "rope.scaling.original_context_length";
pub const ATTN_LOGIT_SOFTCAPPING: &str = "attn_logit_softcapping";
pub const FINAL_LOGIT_SOFTCAPPING: &str = "final_logit_softcapping";

/// `"{arch}.{suffix}"`, e.g. `arch_key("llama", BLOCK_COUNT) == "llama.block_count"`.
pub fn arch_key(arch: &str, suffix: &str) -> String {
    format!("{arch}.{suffix}")
}

// ---- tokenizer.*
pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const TOKENIZER_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const TOKENIZER_SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const TOKENIZER_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Values of `tokenizer.ggml.model`.
pub const TOKENIZER_MODEL_GPT2: &str = "gpt2";
pub const TOKENIZER_MODEL_LLAMA: &str = "llama";
pub const TOKENIZER_MODEL_NONE: &str = "no_vocab";

/// Values of `tokenizer.ggml.token_type` (llama.cpp `llama_token_type`).
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

// ---- tensor names (model-level)
pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";
pub const OUTPUT_NORM_BIAS: &str = "output_norm.bias";
pub const OUTPUT_BIAS: &str = "output.bias";
/// Per-dimension RoPE frequency divisors (Llama 3.1+ "llama3" scaling, written by the converter).
pub const ROPE_FREQS: &str = "rope_freqs.weight";
/// Phi-3 LongRoPE divisors for contexts past / within the original context length.
pub const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
pub const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

/// Prefix of every per-layer tensor name: `blk.{i}.`.
pub const BLOCK_PREFIX: &str = "blk.";

/// Per-layer tensors; the full name is `blk.{i}.{stem}.weight` (or `.bias`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockTensor {
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    /// Fused q, k and v (rows in that order): phi2, phi3.
    AttnQkv,
    AttnOutput,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    /// gemma3, qwen3: per-head RMS norm of q and k.
    AttnQNorm,
    AttnKNorm,
    /// gemma2, gemma3: norms after the attention and feed-forward blocks.
    PostAttentionNorm,
    PostFfwNorm,
}

impl BlockTensor {
    pub const ALL: [BlockTensor; 14] = [
        BlockTensor::AttnNorm,
        BlockTensor::AttnQ,
        BlockTensor::AttnK,
        BlockTensor::AttnV,
        BlockTensor::AttnQkv,
        BlockTensor::AttnOutput,
        BlockTensor::FfnNorm,
        BlockTensor::FfnGate,
        BlockTensor::FfnUp,
        BlockTensor::FfnDown,
        BlockTensor::AttnQNorm,
        BlockTensor::AttnKNorm,
        BlockTensor::PostAttentionNorm,
        BlockTensor::PostFfwNorm,
    ];

    /// The stem between `blk.{i}.` and `.weight`.
    pub fn stem(self) -> &'static str {
        match self {
            BlockTensor::AttnNorm => "attn_norm",
            BlockTensor::AttnQ => "attn_q",
            BlockTensor::AttnK => "attn_k",
            BlockTensor::AttnV => "attn_v",
            BlockTensor::AttnQkv => "attn_qkv",
            BlockTensor::AttnOutput => "attn_output",
            BlockTensor::FfnNorm => "ffn_norm",
            BlockTensor::FfnGate => "ffn_gate",
            BlockTensor::FfnUp => "ffn_up",
            BlockTensor::FfnDown => "ffn_down",
            BlockTensor::AttnQNorm => "attn_q_norm",
            BlockTensor::AttnKNorm => "attn_k_norm",
            BlockTensor::PostAttentionNorm => "post_attention_norm",
            BlockTensor::PostFfwNorm => "post_ffw_norm",
        }
    }

    /// `blk.{layer}.{stem}.weight`
    pub fn name(self, layer: usize) -> String {
        format!("{BLOCK_PREFIX}{layer}.{}.weight", self.stem())
    }

    /// `blk.{layer}.{stem}.bias`
    pub fn bias_name(self, layer: usize) -> String {
        format!("{BLOCK_PREFIX}{layer}.{}.bias", self.stem())
    }
}

/// The layer index of a per-layer tensor name (`"blk.12.attn_q.weight"` → `Some(12)`), for
/// counting layers against `{arch}.block_count`. None for other names or a malformed index.
pub fn block_index(tensor_name: &str) -> Option<usize> {
    let rest = tensor_name.strip_prefix(BLOCK_PREFIX)?;
    let (idx, _) = rest.split_once('.')?;
    if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    idx.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(arch_key(ARCH_LLAMA, CONTEXT_LENGTH), "llama.context_length");
        assert_eq!(
            arch_key(ARCH_GEMMA3, ATTENTION_HEAD_COUNT_KV),
            "gemma3.attention.head_count_kv"
        );
        assert_eq!(BlockTensor::AttnQ.name(0), "blk.0.attn_q.weight");
        assert_eq!(
            BlockTensor::PostFfwNorm.name(17),
            "blk.17.post_ffw_norm.weight"
        );
        assert_eq!(BlockTensor::AttnQ.bias_name(3), "blk.3.attn_q.bias");
        assert_eq!(block_index("blk.12.attn_q.weight"), Some(12));
        assert_eq!(block_index("blk..attn_q.weight"), None);
        assert_eq!(block_index("blk.-1.attn_q.weight"), None);
        assert_eq!(block_index("blk.99999999999999999999999.x"), None);
        assert_eq!(block_index(TOKEN_EMBD), None);
    }
}
