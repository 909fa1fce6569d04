//! qwen2 (llama.cpp `src/models/qwen2.cpp`): Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen files.
//!
//! The llama layer (`x += attn(rms_norm(x)); x += swiglu_ffn(rms_norm(x))`) with biases on the
//! q, k and v projections, RoPE NEOX with the file's scaling (`linear`, `yarn`), and an optional
//! bias on the output projection.

use crate::error::Result;
use crate::gguf::keys::{self, BlockTensor};
use crate::gguf::GgufFile;
use crate::model::blocks::{Activation, Attention, Ffn, Layer, Norm, QkNorm, Residual};
use crate::model::config::{Arch, Hp, ModelConfig};
use crate::model::decoder::{DecoderModel, Parts};
use crate::model::rope::{Rope, RopeScaling};
use hologram_kernels::ops::RopeKind;

pub(crate) fn load(f: &GgufFile, n_vocab: usize) -> Result<DecoderModel> {
    load_qwen(f, n_vocab, Arch::Qwen2)
}

/// qwen2 and qwen3 (which adds per-head q/k norms and drops the output bias).
pub(crate) fn load_qwen(f: &GgufFile, n_vocab: usize, arch: Arch) -> Result<DecoderModel> {
    let qwen3 = arch == Arch::Qwen3;
    let hp = Hp::new(f, arch);
    let cfg = ModelConfig::read(&hp, n_vocab, hp.arch.eps_key())?;
    cfg.require_full_rope()?;
    cfg.require_same_kv_dims()?;
    let mut t = DecoderModel::tensors(f, &cfg)?;
    let (e, eps) = (cfg.n_embd, cfg.norm_eps);

    let base = hp.positive_opt(keys::ROPE_FREQ_BASE)?.unwrap_or(10_000.0);
    let scaling = RopeScaling::read(&hp, cfg.n_ctx_train)?;
    let rope = Rope::new(RopeKind::Neox, cfg.rope_dims, base, scaling, None, "")?;

    let emb = DecoderModel::embeddings(&mut t, &cfg)?;
    let qk = if qwen3 {
        QkNorm::Required
    } else {
        QkNorm::None
    };
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for il in 0..cfg.n_layer {
        layers.push(Layer {
            attn_norm: Norm::rms(&mut t, &BlockTensor::AttnNorm.name(il), e, eps)?,
            attn: Attention::load(&mut t, &cfg, il, qk)?,
            post_attn_norm: None,
            ffn_norm: Some(Norm::rms(&mut t, &BlockTensor::FfnNorm.name(il), e, eps)?),
            ffn: Ffn::gated(&mut t, &cfg, il, Activation::Silu)?,
            post_ffn_norm: None,
        });
    }
    let output_norm = Norm::rms(&mut t, keys::OUTPUT_NORM, e, eps)?;
    let output_bias = if qwen3 {
        None
    } else {
        t.vector_opt(keys::OUTPUT_BIAS, cfg.n_vocab)?
    };
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
            output_bias,
            final_softcap: None,
        },
    )
}
