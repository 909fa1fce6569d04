//! gemma2 (llama.cpp `src/models/gemma2.cpp`).
//!
//! Embeddings scaled by sqrt(n_embd); per layer `x += post_norm(attn(rms_norm(x)))`,
//! `x += post_norm(geglu_ffn(rms_norm(x)))`; RoPE NEOX; q·k scaled by 1/sqrt(head_dim) (27B:
//! 1/sqrt(n_embd / n_head)) and soft-capped (`attn_logit_softcapping`, default 50); sliding-window
//! layers alternate with global ones (pattern 2: even layers slide; window default 4096), with
//! `rope.freq_base_swa` if the file sets one; final logits soft-capped
//! (`final_logit_softcapping`, default 30).

use crate::error::Result;
use crate::gguf::keys::{self, BlockTensor};
use crate::gguf::GgufFile;
use crate::model::blocks::{Activation, Attention, Ffn, Layer, Norm, QkNorm, Residual};
use crate::model::config::{Arch, Hp, ModelConfig, MAX_CTX};
use crate::model::decoder::{DecoderModel, Parts};
use crate::model::rope::{Rope, RopeScaling};
use hologram_kernels::ops::RopeKind;

/// gemma_pytorch's query scaling for the 27B model (46 layers), as llama.cpp keys it.
const GEMMA2_27B_LAYERS: usize = 46;

pub(crate) fn load(f: &GgufFile, n_vocab: usize) -> Result<DecoderModel> {
    let hp = Hp::new(f, Arch::Gemma2);
    let cfg = ModelConfig::read(&hp, n_vocab, hp.arch.eps_key())?;
    let mut t = DecoderModel::tensors(f, &cfg)?;
    let (e, eps) = (cfg.n_embd, cfg.norm_eps);

    let base = hp.positive_opt(keys::ROPE_FREQ_BASE)?.unwrap_or(10_000.0);
    let scaling = RopeScaling::read(&hp, cfg.n_ctx_train)?;
    let global = Rope::new(RopeKind::Neox, cfg.rope_dims, base, scaling, None, "")?;
    let mut ropes = vec![global];
    if let Some(base_swa) = hp.positive_opt(keys::ROPE_FREQ_BASE_SWA)? {
        if base_swa != base {
            ropes.push(Rope::new(
                RopeKind::Neox,
                cfg.rope_dims,
                base_swa,
                scaling,
                None,
                "",
            )?);
        }
    }
    let local_rope = ropes.len() - 1;
    let window = hp
        .usize_opt(keys::ATTENTION_SLIDING_WINDOW, 1, MAX_CTX)?
        .unwrap_or(4096);
    let swa = hp.swa_pattern(cfg.n_layer, 2)?;
    let softcap = hp
        .positive_opt(keys::ATTN_LOGIT_SOFTCAPPING)?
        .unwrap_or(50.0);
    let final_softcap = hp
        .positive_opt(keys::FINAL_LOGIT_SOFTCAPPING)?
        .unwrap_or(30.0);
    let scale = if cfg.n_layer == GEMMA2_27B_LAYERS {
        1.0 / ((cfg.n_embd / cfg.n_head) as f32).sqrt()
    } else {
        1.0 / (cfg.head_dim as f32).sqrt()
    };

    let emb = DecoderModel::embeddings(&mut t, &cfg)?;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (il, &sliding) in swa.iter().enumerate() {
        let mut attn = Attention::load(&mut t, &cfg, il, QkNorm::None)?;
        attn.scale = scale;
        attn.softcap = Some(softcap);
        if sliding {
            attn.window = Some(window);
            attn.rope = local_rope;
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
            final_softcap: Some(final_softcap),
        },
    )
}
