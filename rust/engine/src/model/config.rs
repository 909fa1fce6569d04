//! Typed, validated hyper-parameters read from GGUF metadata. A bad value is an
//! `EngineError::InvalidModel` naming the key, never a panic or a division by zero later.

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use hologram_kernels::ops::RopeKind;

/// Architectures hologram runs (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Arch::Llama),
            "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// Upper bounds that keep a hostile file from sizing buffers: far above any real model.
const MAX_LAYERS: u64 = 4096;
const MAX_DIM: u64 = 1 << 20;
const MAX_HEADS: u64 = 4096;

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
    pub norm_eps: f32,
    pub rope_kind: RopeKind,
    pub rope_dims: usize,
    pub rope_base: f32,
    /// RoPE base of sliding-window layers (gemma3), else = rope_base.
    pub rope_base_swa: f32,
    pub rope_freq_scale: f32,
    /// Sliding-window size for local layers, if any.
    pub sliding_window: Option<usize>,
    /// Every `swa_period`-th layer (1-based) is global; the others slide. 0 = no SWA.
    pub swa_period: usize,
    /// Scale of attention scores (1/sqrt(head_dim) unless the arch says otherwise).
    pub attn_scale: f32,
}

fn key(arch: &str, suffix: &str) -> String {
    format!("{arch}.{suffix}")
}

fn req_u64(f: &GgufFile, k: &str) -> Result<u64> {
    f.get_u64(k)?
        .ok_or_else(|| EngineError::invalid_model(format!("missing required key {k}")))
}

fn bounded(k: &str, v: u64, lo: u64, hi: u64) -> Result<usize> {
    if v < lo || v > hi {
        return Err(EngineError::invalid_model(format!(
            "{k} = {v} is out of range [{lo}, {hi}]"
        )));
    }
    Ok(v as usize)
}

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile, n_vocab: usize) -> Result<Self> {
        let arch_name = f.get_str("general.architecture")?.ok_or_else(|| {
            EngineError::invalid_model("missing required key general.architecture")
        })?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "architecture {arch_name:?} (supported: llama, gemma3)"
            ))
        })?;
        let a = arch.name();
        let name = f.get_str("general.name")?.unwrap_or("").to_string();

        let n_embd = bounded(
            &key(a, "embedding_length"),
            req_u64(f, &key(a, "embedding_length"))?,
            1,
            MAX_DIM,
        )?;
        let n_layer = bounded(
            &key(a, "block_count"),
            req_u64(f, &key(a, "block_count"))?,
            1,
            MAX_LAYERS,
        )?;
        let n_ff = bounded(
            &key(a, "feed_forward_length"),
            req_u64(f, &key(a, "feed_forward_length"))?,
            1,
            MAX_DIM,
        )?;
        let k_head = key(a, "attention.head_count");
        let n_head = bounded(&k_head, req_u64(f, &k_head)?, 1, MAX_HEADS)?;
        let k_kv = key(a, "attention.head_count_kv");
        let n_head_kv = match f.get_u64(&k_kv)? {
            Some(v) => bounded(&k_kv, v, 1, n_head as u64)?,
            None => n_head,
        };
        if n_head % n_head_kv != 0 {
            return Err(EngineError::invalid_model(format!(
                "{k_head} ({n_head}) is not a multiple of {k_kv} ({n_head_kv})"
            )));
        }
        let k_kl = key(a, "attention.key_length");
        let head_dim = match f.get_u64(&k_kl)? {
            Some(v) => bounded(&k_kl, v, 1, MAX_DIM)?,
            None => {
                if n_embd % n_head != 0 {
                    return Err(EngineError::invalid_model(format!(
                        "{} ({n_embd}) is not a multiple of {k_head} ({n_head})",
                        key(a, "embedding_length")
                    )));
                }
                n_embd / n_head
            }
        };
        let k_vl = key(a, "attention.value_length");
        let head_dim_v = match f.get_u64(&k_vl)? {
            Some(v) => bounded(&k_vl, v, 1, MAX_DIM)?,
            None => head_dim,
        };
        let n_ctx_train = match f.get_u64(&key(a, "context_length"))? {
            Some(v) => bounded(&key(a, "context_length"), v, 1, 1 << 24)?,
            None => 2048,
        };
        let k_eps = key(a, "attention.layer_norm_rms_epsilon");
        let norm_eps = f.get_f32(&k_eps)?.unwrap_or(1e-5);
        if !(norm_eps.is_finite() && (0.0..1.0).contains(&norm_eps)) {
            return Err(EngineError::invalid_model(format!(
                "{k_eps} = {norm_eps} is not a valid epsilon"
            )));
        }
        let k_rd = key(a, "rope.dimension_count");
        let rope_dims = match f.get_u64(&k_rd)? {
            Some(v) => bounded(&k_rd, v, 2, head_dim as u64)?,
            None => head_dim,
        };
        if rope_dims % 2 != 0 {
            return Err(EngineError::invalid_model(format!(
                "{k_rd} = {rope_dims} is odd"
            )));
        }
        let k_base = key(a, "rope.freq_base");
        let rope_base = f.get_f32(&k_base)?.unwrap_or(10_000.0);
        if !(rope_base.is_finite() && rope_base > 0.0) {
            return Err(EngineError::invalid_model(format!(
                "{k_base} = {rope_base} must be positive"
            )));
        }
        let k_sc = key(a, "rope.scaling.factor");
        let rope_freq_scale = match f.get_f32(&k_sc)? {
            Some(s) if s.is_finite() && s > 0.0 => {
                let ty = f.get_str(&key(a, "rope.scaling.type"))?.unwrap_or("linear");
                if ty == "linear" {
                    1.0 / s
                } else if ty == "none" {
                    1.0
                } else {
                    return Err(EngineError::Unsupported(format!(
                        "rope scaling type {ty:?}"
                    )));
                }
            }
            Some(s) => {
                return Err(EngineError::invalid_model(format!(
                    "{k_sc} = {s} must be positive"
                )))
            }
            None => 1.0,
        };

        let mut cfg = ModelConfig {
            arch,
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
            rope_kind: RopeKind::Norm,
            rope_dims,
            rope_base,
            rope_base_swa: rope_base,
            rope_freq_scale,
            sliding_window: None,
            swa_period: 0,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
        };
        if arch == Arch::Gemma3 {
            cfg.rope_kind = RopeKind::Neox;
            // llama.cpp (src/models/gemma3.cpp / llama-model.cpp LLM_ARCH_GEMMA3): sliding
            // window layers use a fixed RoPE base of 10000 and no scaling; every 6th layer is
            // global (pattern 6) when the file does not say otherwise.
            cfg.rope_base_swa = 10_000.0;
            let k_sw = key(a, "attention.sliding_window");
            cfg.sliding_window = match f.get_u64(&k_sw)? {
                Some(v) => Some(bounded(&k_sw, v, 1, 1 << 24)?),
                None => None,
            };
            cfg.swa_period = if cfg.sliding_window.is_some() { 6 } else { 0 };
        }
        Ok(cfg)
    }

    /// Whether layer `il` attends through a sliding window.
    pub fn is_swa_layer(&self, il: usize) -> bool {
        self.swa_period > 0 && !(il + 1).is_multiple_of(self.swa_period)
    }
}
