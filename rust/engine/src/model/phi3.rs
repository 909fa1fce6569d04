//! phi3 (llama.cpp `src/models/phi3.cpp`): Phi-3, Phi-3.5, Phi-4-mini files.
//!
//! `x += attn(rms_norm(x)); x += swiglu_ffn(rms_norm(x))` with q/k/v fused in `attn_qkv` (or
//! separate) and gate/up fused in one `ffn_up` (gate rows first); RoPE NEOX, possibly partial,
//! with Phi-3's LongRoPE: per-dimension frequency divisors `rope_factors_long` when the context
//! is longer than `rope.scaling.original_context_length`, else `rope_factors_short`, and cos/sin
//! scaled by `rope.scaling.attn_factor`.
//!
//! `attention.sliding_window` (Phi-3-mini/medium 4k: 2047) applies to every layer, as the model
//! was trained. llama.cpp currently disables Phi-3's window (its PR 13676: some converted files
//! carry a wrong value), so the two agree on sequences up to the window's length.

use crate::error::Result;
use crate::gguf::keys::{self, BlockTensor};
use crate::gguf::GgufFile;
use crate::model::blocks::{Activation, Attention, Ffn, Layer, Norm, QkNorm, Residual};
use crate::model::config::{Arch, Hp, ModelConfig};
use crate::model::decoder::{DecoderModel, Parts};
use crate::model::rope::{Rope, RopeScaling};
use crate::model::LoadOptions;
use hologram_kernels::ops::RopeKind;

pub(crate) fn load(f: &GgufFile, n_vocab: usize, opts: &LoadOptions) -> Result<DecoderModel> {
    let hp = Hp::new(f, Arch::Phi3);
    let cfg = ModelConfig::read(&hp, n_vocab, hp.arch.eps_key())?;
    cfg.require_same_kv_dims()?;
    let mut t = DecoderModel::tensors(f, &cfg)?;
    let (e, eps) = (cfg.n_embd, cfg.norm_eps);

    let base = hp.positive_opt(keys::ROPE_FREQ_BASE)?.unwrap_or(10_000.0);
    let scaling = RopeScaling::read(&hp, cfg.n_ctx_train)?;
    // llama.cpp `get_rope_factors`: long factors when a sequence may outgrow the original
    // context. Both tensors are read (an unread tensor is an error); one is used.
    let half = cfg.rope_dims / 2;
    let long = t.vector_opt(keys::ROPE_FACTORS_LONG, half)?;
    let short = t.vector_opt(keys::ROPE_FACTORS_SHORT, half)?;
    let (factors, name) = if opts.n_ctx > scaling.n_ctx_orig {
        (long, keys::ROPE_FACTORS_LONG)
    } else {
        (short, keys::ROPE_FACTORS_SHORT)
    };
    let rope = Rope::new(RopeKind::Neox, cfg.rope_dims, base, scaling, factors, name)?;
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
            ffn: Ffn::fused_gate_up(&mut t, &cfg, il, Activation::Silu)?,
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
