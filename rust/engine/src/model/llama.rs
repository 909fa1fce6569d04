//! llama (llama.cpp `src/models/llama.cpp`): Llama 1/2/3, TinyLlama, SmolLM, Mistral files.
//!
//! `x += attn(rms_norm(x)); x += swiglu_ffn(rms_norm(x))`; grouped-query attention with
//! optional q/k/v/o biases; RoPE NORM (adjacent pairs: the converter permutes q and k) with the
//! file's scaling (`linear`, `yarn`) and Llama 3.1+'s per-dimension `rope_freqs.weight` (the
//! "llama3" scaling, computed by the converter); optional FFN biases.
//!
//! Mistral v0.1 declares a sliding window (`llama.attention.sliding_window`); when the file sets
//! one, every layer attends through it (as the model was trained; llama.cpp does not read the
//! key for this architecture, so the two agree up to the window's length).

use crate::error::{EngineError, Result};
use crate::gguf::keys::{self, BlockTensor};
use crate::gguf::GgufFile;
use crate::model::blocks::{Activation, Attention, Ffn, Layer, Norm, QkNorm, Residual};
use crate::model::config::{Arch, Hp, ModelConfig};
use crate::model::decoder::{DecoderModel, Parts};
use crate::model::rope::{Rope, RopeScaling};
use hologram_kernels::ops::RopeKind;

pub(crate) fn load(f: &GgufFile, n_vocab: usize) -> Result<DecoderModel> {
    let hp = Hp::new(f, Arch::Llama);
    let cfg = ModelConfig::read(&hp, n_vocab, hp.arch.eps_key())?;
    cfg.require_full_rope()?;
    cfg.require_same_kv_dims()?;
    let mut t = DecoderModel::tensors(f, &cfg)?;
    let (e, eps) = (cfg.n_embd, cfg.norm_eps);

    let base = hp.positive_opt(keys::ROPE_FREQ_BASE)?.unwrap_or(10_000.0);
    let scaling = RopeScaling::read(&hp, cfg.n_ctx_train)?;
    if scaling.longrope {
        return Err(EngineError::Unsupported(format!(
            "{} = \"longrope\" for the llama architecture",
            hp.key(keys::ROPE_SCALING_TYPE)
        )));
    }
    let freqs = t.vector_opt(keys::ROPE_FREQS, cfg.rope_dims / 2)?;
    let rope = Rope::new(
        RopeKind::Norm,
        cfg.rope_dims,
        base,
        scaling,
        freqs,
        keys::ROPE_FREQS,
    )?;
    let window = hp.sliding_window()?;

    let emb = DecoderModel::embeddings(&mut t, &cfg)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for il in 0..cfg.n_layer {
        let mut attn = Attention::load(&mut t, &cfg, il, QkNorm::None)?;
        attn.window = window;
        layers.push(Layer {
            attn_norm: Norm::rms(&mut t, &BlockTensor::AttnNorm.name(il), e, eps)?,
            attn,
            post_attn_norm: None,
            ffn_norm: Some(Norm::rms(&mut t, &BlockTensor::FfnNorm.name(il), e, eps)?),
            ffn: Ffn::gated(&mut t, &cfg, il, Activation::Silu)?,
            post_ffn_norm: None,
        });
    }
    let output_norm = Norm::rms(&mut t, keys::OUTPUT_NORM, e, eps)?;
    DecoderModel::assemble(
        t,
        cfg,
        emb,
        Parts {
            embd_scale: 1.0,
            layers,
            residual: Residual::Sequential,
            ropes: vec![rope],
            output_norm,
            output_bias: None,
            final_softcap: None,
        },
    )
}
