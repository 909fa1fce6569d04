//! Typed, validated hyper-parameters read from GGUF metadata. A bad value is an
//! `EngineError::InvalidModel` naming the key, never a panic or a division by zero later.
//!
//! [`ModelConfig`] holds what every decoder architecture has (sizes, head layout, norm epsilon);
//! the per-architecture files (`llama.rs`, `qwen2.rs`, ...) read the rest through [`Hp`].

use crate::error::{EngineError, Result};
use crate::gguf::keys;
use crate::gguf::{Array, GgufFile, Value};

/// Decoder architectures hologram runs (`general.architecture`), one file each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Phi2,
    Phi3,
    Gemma2,
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 7] = [
        Arch::Llama,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Phi2,
        Arch::Phi3,
        Arch::Gemma2,
        Arch::Gemma3,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => keys::ARCH_LLAMA,
            Arch::Qwen2 => keys::ARCH_QWEN2,
            Arch::Qwen3 => keys::ARCH_QWEN3,
            Arch::Phi2 => keys::ARCH_PHI2,
            Arch::Phi3 => keys::ARCH_PHI3,
            Arch::Gemma2 => keys::ARCH_GEMMA2,
            Arch::Gemma3 => keys::ARCH_GEMMA3,
        }
    }

    /// The epsilon key of the architecture's norms.
    pub fn eps_key(self) -> EpsKey {
        match self {
            Arch::Phi2 => EpsKey::Layer,
            _ => EpsKey::Rms,
        }
    }

    /// "llama, qwen2, ..." for error messages.
    pub fn supported_list() -> String {
        Arch::ALL.map(Arch::name).join(", ")
    }
}

/// Upper bounds that keep a hostile file from sizing buffers: far above any real model.
pub(crate) const MAX_LAYERS: u64 = 4096;
pub(crate) const MAX_DIM: u64 = 1 << 20;
pub(crate) const MAX_HEADS: u64 = 4096;
pub(crate) const MAX_CTX: u64 = 1 << 24;

/// What every decoder architecture has. Per-architecture settings (RoPE variants, soft-capping,
/// sliding windows, biases) live in the model's blocks, chosen by the architecture's file.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub name: String,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head width of queries and keys (`attention.key_length`, default n_embd / n_head).
    pub head_dim: usize,
    /// Per-head width of values (`attention.value_length`, default head_dim).
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    /// Epsilon of the model's norms (RMSNorm or LayerNorm, see [`EpsKey`]).
    pub norm_eps: f32,
    /// Rotated dimensions of each q/k head (`rope.dimension_count`, default head_dim).
    pub rope_dims: usize,
}

/// Which epsilon key the architecture's norms read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpsKey {
    /// `attention.layer_norm_rms_epsilon` (RMSNorm models).
    Rms,
    /// `attention.layer_norm_epsilon` (LayerNorm models: phi2).
    Layer,
}

/// Typed access to the `{arch}.*` keys of one file, with range checks that name the key.
pub struct Hp<'a> {
    pub f: &'a GgufFile,
    pub arch: Arch,
}

impl<'a> Hp<'a> {
    pub fn new(f: &'a GgufFile, arch: Arch) -> Self {
        Hp { f, arch }
    }

    pub fn key(&self, suffix: &str) -> String {
        keys::arch_key(self.arch.name(), suffix)
    }

    /// An integer in `[lo, hi]`, if present.
    pub fn usize_opt(&self, suffix: &str, lo: u64, hi: u64) -> Result<Option<usize>> {
        let k = self.key(suffix);
        match self.f.get_u64(&k)? {
            None => Ok(None),
            Some(v) if v < lo || v > hi => Err(EngineError::invalid_model(format!(
                "{k} = {v} is out of range [{lo}, {hi}]"
            ))),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| EngineError::invalid_model(format!("{k} = {v} is too large"))),
        }
    }

    pub fn usize_req(&self, suffix: &str, lo: u64, hi: u64) -> Result<usize> {
        self.usize_opt(suffix, lo, hi)?.ok_or_else(|| {
            EngineError::invalid_model(format!("missing required key {}", self.key(suffix)))
        })
    }

    /// A float that `valid` accepts (`what` says what that is, for the error), if present.
    pub fn f32_opt(
        &self,
        suffix: &str,
        valid: impl Fn(f32) -> bool,
        what: &str,
    ) -> Result<Option<f32>> {
        let k = self.key(suffix);
        match self.f.get_f32(&k)? {
            Some(v) if !(v.is_finite() && valid(v)) => Err(EngineError::invalid_model(format!(
                "{k} = {v}: must be {what}"
            ))),
            v => Ok(v),
        }
    }

    /// A positive finite float, if present.
    pub fn positive_opt(&self, suffix: &str) -> Result<Option<f32>> {
        self.f32_opt(suffix, |v| v > 0.0, "positive")
    }

    pub fn str_opt(&self, suffix: &str) -> Result<Option<&'a str>> {
        self.f.get_str(&self.key(suffix))
    }

    /// `attention.sliding_window`; absent or 0 means none (llama.cpp: `n_swa > 0` turns it on).
    pub fn sliding_window(&self) -> Result<Option<usize>> {
        Ok(self
            .usize_opt(keys::ATTENTION_SLIDING_WINDOW, 0, MAX_CTX)?
            .filter(|&w| w > 0))
    }

    /// Which layers use a sliding window, as llama.cpp's `load_swa_pattern`: a per-layer bool
    /// array under `attention.sliding_window_pattern`, or a period `n` there (default
    /// `default_period`) where every `n`-th layer (1-based) is global and the others slide
    /// (`n == 0`: every layer slides).
    pub fn swa_pattern(&self, n_layer: usize, default_period: u64) -> Result<Vec<bool>> {
        let k = self.key(keys::ATTENTION_SLIDING_WINDOW_PATTERN);
        if let Some(Value::Array(a)) = self.f.get(&k) {
            return match a {
                Array::Bool(v) if v.len() == n_layer => Ok(v.clone()),
                Array::Bool(v) => Err(EngineError::invalid_model(format!(
                    "{k} has {} entries for {n_layer} layers",
                    v.len()
                ))),
                _ => Err(EngineError::invalid_model(format!(
                    "{k} must be an integer or an array of booleans"
                ))),
            };
        }
        let n = self
            .usize_opt(keys::ATTENTION_SLIDING_WINDOW_PATTERN, 0, MAX_LAYERS)?
            .unwrap_or(default_period as usize);
        Ok(swa_layers(n_layer, n))
    }
}

/// llama.cpp `set_swa_pattern(n, dense_first = false)`: layer `il` slides unless it is the last
/// of each group of `n` (`n == 0`: every layer slides; `n == 1`: none does).
pub fn swa_layers(n_layer: usize, n: usize) -> Vec<bool> {
    (0..n_layer).map(|il| n == 0 || il % n < n - 1).collect()
}

/// The architecture `general.architecture` names, or an `Unsupported` error naming it and the
/// supported ones.
pub fn file_arch(f: &GgufFile) -> Result<Arch> {
    let name = f.get_str(keys::GENERAL_ARCHITECTURE)?.ok_or_else(|| {
        EngineError::invalid_model(format!(
            "missing required key {}",
            keys::GENERAL_ARCHITECTURE
        ))
    })?;
    Arch::from_name(name).ok_or_else(|| {
        EngineError::Unsupported(format!(
            "architecture {name:?} (supported: {})",
            Arch::supported_list()
        ))
    })
}

impl ModelConfig {
    /// The common hyper-parameters of the file's architecture (what
    /// [`crate::model::load_decoder`] reads first).
    pub fn from_gguf(f: &GgufFile, n_vocab: usize) -> Result<Self> {
        let arch = file_arch(f)?;
        Self::read(&Hp::new(f, arch), n_vocab, arch.eps_key())
    }

    /// The hyper-parameters every decoder has, validated.
    pub fn read(hp: &Hp<'_>, n_vocab: usize, eps_key: EpsKey) -> Result<Self> {
        let f = hp.f;
        let name = f.get_str(keys::GENERAL_NAME)?.unwrap_or("").to_string();
        let n_embd = hp.usize_req(keys::EMBEDDING_LENGTH, 1, MAX_DIM)?;
        let n_layer = hp.usize_req(keys::BLOCK_COUNT, 1, MAX_LAYERS)?;
        let n_ff = hp.usize_req(keys::FEED_FORWARD_LENGTH, 1, MAX_DIM)?;
        let n_head = hp.usize_req(keys::ATTENTION_HEAD_COUNT, 1, MAX_HEADS)?;
        let n_head_kv = hp
            .usize_opt(keys::ATTENTION_HEAD_COUNT_KV, 1, n_head as u64)?
            .unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(EngineError::invalid_model(format!(
                "{} ({n_head}) is not a multiple of {} ({n_head_kv})",
                hp.key(keys::ATTENTION_HEAD_COUNT),
                hp.key(keys::ATTENTION_HEAD_COUNT_KV)
            )));
        }
        let head_dim = match hp.usize_opt(keys::ATTENTION_KEY_LENGTH, 1, MAX_DIM)? {
            Some(v) => v,
            None => {
                if n_embd % n_head != 0 {
                    return Err(EngineError::invalid_model(format!(
                        "{} ({n_embd}) is not a multiple of {} ({n_head})",
                        hp.key(keys::EMBEDDING_LENGTH),
                        hp.key(keys::ATTENTION_HEAD_COUNT)
                    )));
                }
                n_embd / n_head
            }
        };
        let head_dim_v = hp
            .usize_opt(keys::ATTENTION_VALUE_LENGTH, 1, MAX_DIM)?
            .unwrap_or(head_dim);
        let n_ctx_train = hp
            .usize_opt(keys::CONTEXT_LENGTH, 1, MAX_CTX)?
            .unwrap_or(2048);
        let eps_suffix = match eps_key {
            EpsKey::Rms => keys::ATTENTION_LAYERNORM_RMS_EPS,
            EpsKey::Layer => keys::ATTENTION_LAYERNORM_EPS,
        };
        let norm_eps = hp
            .f32_opt(
                eps_suffix,
                |v| (0.0..1.0).contains(&v),
                "a valid epsilon in [0, 1)",
            )?
            .unwrap_or(1e-5);
        let rope_dims = hp
            .usize_opt(keys::ROPE_DIMENSION_COUNT, 2, head_dim as u64)?
            .unwrap_or(head_dim);
        if rope_dims % 2 != 0 {
            return Err(EngineError::invalid_model(format!(
                "{} = {rope_dims} is odd",
                hp.key(keys::ROPE_DIMENSION_COUNT)
            )));
        }
        Ok(ModelConfig {
            arch: hp.arch,
            name,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            n_vocab,
            norm_eps,
            rope_dims,
        })
    }

    /// Error unless every head is rotated in full (llama.cpp asserts `n_rot == n_embd_head` for
    /// the llama, qwen2 and qwen3 graphs).
    pub fn require_full_rope(&self) -> Result<()> {
        if self.rope_dims != self.head_dim {
            return Err(EngineError::invalid_model(format!(
                "{}.{} = {} must equal the head size {} for this architecture",
                self.arch.name(),
                keys::ROPE_DIMENSION_COUNT,
                self.rope_dims,
                self.head_dim
            )));
        }
        Ok(())
    }

    /// Error unless keys and values have the same head size (the graphs of every family here
    /// except gemma2/gemma3 assume it).
    pub fn require_same_kv_dims(&self) -> Result<()> {
        if self.head_dim != self.head_dim_v {
            return Err(EngineError::invalid_model(format!(
                "{}: key head size {} differs from value head size {}",
                self.arch.name(),
                self.head_dim,
                self.head_dim_v
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swa_patterns_follow_llama_cpp() {
        // gemma3: five sliding layers, then a global one.
        let g3 = swa_layers(12, 6);
        assert_eq!(g3.iter().filter(|&&s| !s).count(), 2);
        assert!(!g3[5] && !g3[11] && g3[0] && g3[4] && g3[6]);
        // gemma2: even layers slide.
        assert_eq!(swa_layers(4, 2), [true, false, true, false]);
        assert_eq!(swa_layers(3, 1), [false, false, false]);
        assert_eq!(swa_layers(3, 0), [true, true, true]);
    }

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_name(a.name()), Some(a));
        }
        assert_eq!(Arch::from_name("falcon"), None);
        assert!(Arch::supported_list().starts_with("llama, qwen2"));
    }
}
