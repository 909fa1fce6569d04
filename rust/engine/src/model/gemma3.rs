//! gemma3 (llama.cpp `src/models/gemma3.cpp`).
//!
//! Embeddings scaled by sqrt(n_embd); per layer `x += post_norm(attn(rms_norm(x)))`,
//! `x += post_norm(geglu_ffn(rms_norm(x)))` (all RMSNorm); per-head RMSNorm of q and k before
//! RoPE NEOX; q·k scaled by 1/sqrt(head_dim) (27B: 1/sqrt(n_embd / n_head)). When the file sets
//! `attention.sliding_window`, the layers the sliding-window pattern marks (default: five of
//! every six) attend through it with their own RoPE base (`rope.freq_base_swa`, default 10000)
//! and no position scaling; the others are global. Optional final logit soft-capping.

use crate::error::Result;
use crate::gguf::keys::{self, BlockTensor};
use crate::gguf::GgufFile;
use crate::model::blocks::{Activation, Attention, Ffn, Layer, Norm, QkNorm, Residual};
use crate::model::config::{Arch, Hp, ModelConfig};
use crate::model::decoder::{DecoderModel, Parts};
use crate::model::rope::{Rope, RopeScaling};
use hologram_kernels::ops::RopeKind;

/// gemma_pytorch's query scaling for the 27B model (62 layers), as llama.cpp keys it.
const GEMMA3_27B_LAYERS: usize = 62;

pub(crate) fn load(f: &GgufFile, n_vocab: usize) -> Result<DecoderModel> {
    let hp = Hp::new(f, Arch::Gemma3);
    let cfg = ModelConfig::read(&hp, n_vocab, hp.arch.eps_key())?;
    let mut t = DecoderModel::tensors(f, &cfg)?;
    let (e, eps) = (cfg.n_embd, cfg.norm_eps);

    let base = hp.positive_opt(keys::ROPE_FREQ_BASE)?.unwrap_or(10_000.0);
    let scaling = RopeScaling::read(&hp, cfg.n_ctx_train)?;
    let global = Rope::new(RopeKind::Neox, cfg.rope_dims, base, scaling, None, "")?;
    let window = hp.sliding_window()?;
    let (ropes, swa) = match window {
        Some(_) => {
            let base_swa = hp
                .positive_opt(keys::ROPE_FREQ_BASE_SWA)?
                .unwrap_or(10_000.0);
            let local = RopeScaling {
                freq_scale: 1.0,
                ..scaling
            };
            let local = Rope::new(RopeKind::Neox, cfg.rope_dims, base_swa, local, None, "")?;
            (vec![global, local], hp.swa_pattern(cfg.n_layer, 6)?)
        }
        None => (vec![global], vec![false; cfg.n_layer]),
    };
    let scale = if cfg.n_layer == GEMMA3_27B_LAYERS {
        1.0 / ((cfg.n_embd / cfg.n_head) as f32).sqrt()
    } else {
        1.0 / (cfg.head_dim as f32).sqrt()
    };

    let emb = DecoderModel::embeddings(&mut t, &cfg)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (il, &sliding) in swa.iter().enumerate() {
        let mut attn = Attention::load(&mut t, &cfg, il, QkNorm::Required)?;
        attn.scale = scale;
        if sliding {
            attn.window = window;
            attn.rope = 1;
        }
        layers.push(Layer {
            attn_norm: Norm::rms(&mut t, &BlockTensor::AttnNorm.name(il), e, eps)?,
            attn,
            post_attn_norm: Some(Norm::rms(
                &mut t,
                &BlockTensor::PostAttentionNorm.name(il),
                e,
                eps,
            )?),
            ffn_norm: Some(Norm::rms(&mut t, &BlockTensor::FfnNorm.name(il), e, eps)?),
            ffn: Ffn::gated(&mut t, &cfg, il, Activation::GeluTanh)?,
            post_ffn_norm: Some(Norm::rms(
                &mut t,
                &BlockTensor::PostFfwNorm.name(il),
                e,
                eps,
            )?),
        });
    }
    let output_norm = Norm::rms(&mut t, keys::OUTPUT_NORM, e, eps)?;
    let final_softcap = hp
        .f32_opt(keys::FINAL_LOGIT_SOFTCAPPING, |v| v >= 0.0, "non-negative")?
        .filter(|&v| v != 0.0);
    DecoderModel::assemble(
        t,
        cfg,
        emb,
        Parts {
            embd_scale: (e as f32).sqrt(),
            layers,
            residual: Residual::Sequential,
            ropes,
            output_norm,
            output_bias: None,
            final_softcap,
        },
    )
}
