//! phi2 (llama.cpp `src/models/phi2.cpp`): Phi-2, Phi-1.5 files.
//!
//! `h = layer_norm(x); x += attn(h) + gelu_ffn(h)`: attention and FFN in parallel on one
//! LayerNorm (with bias); fused q/k/v with bias (or separate tensors); partial RoPE NEOX over the
//! first `rope.dimension_count` dimensions of each head; output projection with bias; a plain
//! (ungated) GELU FFN with biases; final LayerNorm with bias and an output matrix with bias.

use crate::error::Result;
use crate::gguf::keys::{self, BlockTensor};
use crate::gguf::GgufFile;
use crate::model::blocks::{missing, Activation, Attention, Ffn, Layer, Norm, QkNorm, Residual};
use crate::model::config::{Arch, Hp, ModelConfig};
use crate::model::decoder::{DecoderModel, Parts};
use crate::model::rope::{Rope, RopeScaling};
use hologram_kernels::ops::RopeKind;

pub(crate) fn load(f: &GgufFile, n_vocab: usize) -> Result<DecoderModel> {
    let hp = Hp::new(f, Arch::Phi2);
    let cfg = ModelConfig::read(&hp, n_vocab, hp.arch.eps_key())?;
    cfg.require_same_kv_dims()?;
    let mut t = DecoderModel::tensors(f, &cfg)?;
    let (e, eps) = (cfg.n_embd, cfg.norm_eps);

    let base = hp.positive_opt(keys::ROPE_FREQ_BASE)?.unwrap_or(10_000.0);
    let scaling = RopeScaling::read(&hp, cfg.n_ctx_train)?;
    let rope = Rope::new(RopeKind::Neox, cfg.rope_dims, base, scaling, None, "")?;

    let (token_embd, output, tied) = DecoderModel::embeddings(&mut t, &cfg)?;
    if tied {
        return Err(missing(keys::OUTPUT));
    }
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for il in 0..cfg.n_layer {
        let attn = Attention::load(&mut t, &cfg, il, QkNorm::None)?;
        attn.require_output_bias(il)?;
        layers.push(Layer {
            attn_norm: Norm::layer(&mut t, &BlockTensor::AttnNorm.name(il), e, eps)?,
            attn,
            post_attn_norm: None,
            ffn_norm: None,
            ffn: Ffn::plain_with_bias(&mut t, &cfg, il, Activation::GeluTanh)?,
            post_ffn_norm: None,
        });
    }
    let output_norm = Norm::layer(&mut t, keys::OUTPUT_NORM, e, eps)?;
    let output_bias = t.vector(keys::OUTPUT_BIAS, cfg.n_vocab)?;
    DecoderModel::assemble(
        t,
        cfg,
        (token_embd, output, tied),
        Parts {
            embd_scale: 1.0,
            layers,
            residual: Residual::Parallel,
            ropes: vec![rope],
            output_norm,
            output_bias: Some(output_bias),
            final_softcap: None,
        },
    )
}
