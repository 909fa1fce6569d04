//! The building blocks the decoder architectures are made of, as data: norms (RMSNorm, LayerNorm
//! with bias), attention (separate or fused q/k/v, optional biases, per-head q/k norms, scale,
//! logit soft-capping, sliding window, which RoPE table) and feed-forward networks (gated SwiGLU /
//! GeGLU or plain GELU, optional biases). Each architecture file loads its tensors into these;
//! `decoder.rs` runs them. Loading mirrors llama.cpp's shared helpers (`create_tensor_qkv`,
//! `build_qkv`, `build_norm`, `build_ffn`).

use crate::error::{EngineError, Result};
use crate::gguf::keys::BlockTensor;
use crate::model::config::ModelConfig;
use crate::model::weights::{Linear, Tensors};
use hologram_kernels::ops;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// `x / rms(x) * w (+ b)`.
    Rms,
    /// `(x - mean) / sqrt(var + eps) * w + b`.
    Layer,
}

#[derive(Clone, Debug)]
pub struct Norm {
    pub kind: NormKind,
    pub w: Vec<f32>,
    pub b: Option<Vec<f32>>,
    pub eps: f32,
}

impl Norm {
    /// RMSNorm `blk.{il}.{t}.weight` (`il = None`: the model-level tensor `name`) with an
    /// optional `.bias`.
    pub fn rms(t: &mut Tensors<'_>, name: &str, n: usize, eps: f32) -> Result<Self> {
        Ok(Norm {
            kind: NormKind::Rms,
            w: t.vector(name, n)?,
            b: t.vector_opt(&bias_of(name), n)?,
            eps,
        })
    }

    pub fn rms_opt(t: &mut Tensors<'_>, name: &str, n: usize, eps: f32) -> Result<Option<Self>> {
        if !t.has(name) {
            return Ok(None);
        }
        Self::rms(t, name, n, eps).map(Some)
    }

    /// LayerNorm with its required `.bias`.
    pub fn layer(t: &mut Tensors<'_>, name: &str, n: usize, eps: f32) -> Result<Self> {
        Ok(Norm {
            kind: NormKind::Layer,
            w: t.vector(name, n)?,
            b: Some(t.vector(&bias_of(name), n)?),
            eps,
        })
    }

    /// `out = norm(x)` for one row.
    #[inline]
    pub fn row(&self, x: &[f32], out: &mut [f32]) {
        match (self.kind, &self.b) {
            (NormKind::Rms, b) => {
                ops::rms_norm(x, &self.w, self.eps, out);
                if let Some(b) = b {
                    add(out, b);
                }
            }
            (NormKind::Layer, Some(b)) => ops::layer_norm(x, &self.w, b, self.eps, out),
            (NormKind::Layer, None) => {
                out.copy_from_slice(x);
                layer_norm_inplace(out, &self.w, self.eps);
            }
        }
    }

    /// `out = norm(x)` for `n` rows.
    pub fn rows(&self, x: &[f32], out: &mut [f32], n: usize) {
        let e = self.w.len();
        for r in 0..n {
            self.row(&x[r * e..(r + 1) * e], &mut out[r * e..(r + 1) * e]);
        }
    }

    /// `x = norm(x)` for `n` rows.
    pub fn rows_inplace(&self, x: &mut [f32], n: usize) {
        let e = self.w.len();
        for r in 0..n {
            let xr = &mut x[r * e..(r + 1) * e];
            match self.kind {
                NormKind::Rms => ops::rms_norm_inplace(xr, &self.w, self.eps),
                NormKind::Layer => layer_norm_inplace(xr, &self.w, self.eps),
            }
            if let Some(b) = &self.b {
                add(xr, b);
            }
        }
    }
}

/// `(x - mean) / sqrt(var + eps) * w` in place (the bias is added by the caller).
fn layer_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>()
        / n;
    let inv = (1.0 / (var + eps as f64).sqrt()) as f32;
    let mean = mean as f32;
    for (xi, &wi) in x.iter_mut().zip(w) {
        *xi = (*xi - mean) * inv * wi;
    }
}

fn bias_of(weight_name: &str) -> String {
    match weight_name.strip_suffix(".weight") {
        Some(stem) => format!("{stem}.bias"),
        None => format!("{weight_name}.bias"),
    }
}

/// `y += b`.
#[inline]
pub fn add(y: &mut [f32], b: &[f32]) {
    for (v, &bv) in y.iter_mut().zip(b) {
        *v += bv;
    }
}

/// `b` added to each of the `n` rows of `y` (`b.len()` wide), if there is a bias.
#[inline]
pub fn add_bias_rows(y: &mut [f32], b: Option<&[f32]>, n: usize) {
    if let Some(b) = b {
        let w = b.len();
        for r in 0..n {
            add(&mut y[r * w..(r + 1) * w], b);
        }
    }
}

/// Self-attention of one layer.
#[derive(Debug)]
pub struct Attention {
    /// `(n_head * head_dim, n_embd)`; a view of `attn_qkv` when the file fuses them.
    pub wq: Linear,
    /// `(n_head_kv * head_dim, n_embd)`.
    pub wk: Linear,
    /// `(n_head_kv * head_dim_v, n_embd)`.
    pub wv: Linear,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Per-head RMSNorm of q and k before RoPE, `(head_dim)` each (qwen3, gemma3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// `(n_embd, n_head * head_dim_v)`.
    pub wo: Linear,
    pub bo: Option<Vec<f32>>,
    /// Multiplier of q·k (1/sqrt(head_dim) unless the architecture says otherwise).
    pub scale: f32,
    /// `cap * tanh(score / cap)` of the scaled scores (gemma2).
    pub softcap: Option<f32>,
    /// Keys further back than this many positions are not attended to (`p_q - p_k >= window`).
    pub window: Option<usize>,
    /// Index of this layer's RoPE table in the model's `ropes`.
    pub rope: usize,
}

/// Whether the per-head q/k norms are part of the architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNorm {
    None,
    Required,
}

impl Attention {
    /// Layer `il`'s attention tensors, as llama.cpp's `create_tensor_qkv`: a fused `attn_qkv`
    /// (with a fused bias, or separate q/k/v biases) or separate `attn_q/k/v`, each bias
    /// optional; `attn_output` with an optional bias. Scale 1/sqrt(head_dim), no soft-cap, no
    /// window, RoPE table 0: the architecture changes what differs.
    pub fn load(t: &mut Tensors<'_>, c: &ModelConfig, il: usize, qk: QkNorm) -> Result<Self> {
        let e = c.n_embd;
        let (nq, nk, nv) = (
            c.n_head * c.head_dim,
            c.n_head_kv * c.head_dim,
            c.n_head_kv * c.head_dim_v,
        );
        let qkv_name = BlockTensor::AttnQkv.name(il);
        let (wq, wk, wv, bq, bk, bv);
        if t.has(&qkv_name) {
            [wq, wk, wv] = t.matrix_parts(&qkv_name, e, [nq, nk, nv])?;
            let fused_b = BlockTensor::AttnQkv.bias_name(il);
            if t.has(&fused_b) {
                let b = t.vector(&fused_b, nq + nk + nv)?;
                bq = Some(b[..nq].to_vec());
                bk = Some(b[nq..nq + nk].to_vec());
                bv = Some(b[nq + nk..].to_vec());
            } else {
                (bq, bk, bv) = separate_biases(t, il, nq, nk, nv)?;
            }
        } else {
            wq = t.matrix(&BlockTensor::AttnQ.name(il), e, nq)?;
            wk = t.matrix(&BlockTensor::AttnK.name(il), e, nk)?;
            wv = t.matrix(&BlockTensor::AttnV.name(il), e, nv)?;
            (bq, bk, bv) = separate_biases(t, il, nq, nk, nv)?;
        }
        let (q_norm, k_norm) = match qk {
            QkNorm::None => (None, None),
            QkNorm::Required => (
                Some(t.vector(&BlockTensor::AttnQNorm.name(il), c.head_dim)?),
                Some(t.vector(&BlockTensor::AttnKNorm.name(il), c.head_dim)?),
            ),
        };
        Ok(Attention {
            wq,
            wk,
            wv,
            bq,
            bk,
            bv,
            q_norm,
            k_norm,
            wo: t.matrix(
                &BlockTensor::AttnOutput.name(il),
                c.n_head * c.head_dim_v,
                e,
            )?,
            bo: t.vector_opt(&BlockTensor::AttnOutput.bias_name(il), e)?,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            softcap: None,
            window: None,
            rope: 0,
        })
    }

    /// Error unless the output projection has a bias (phi2).
    pub fn require_output_bias(&self, il: usize) -> Result<()> {
        match self.bo {
            Some(_) => Ok(()),
            None => Err(missing(&BlockTensor::AttnOutput.bias_name(il))),
        }
    }
}

type Biases = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

fn separate_biases(
    t: &mut Tensors<'_>,
    il: usize,
    nq: usize,
    nk: usize,
    nv: usize,
) -> Result<Biases> {
    Ok((
        t.vector_opt(&BlockTensor::AttnQ.bias_name(il), nq)?,
        t.vector_opt(&BlockTensor::AttnK.bias_name(il), nk)?,
        t.vector_opt(&BlockTensor::AttnV.bias_name(il), nv)?,
    ))
}

pub fn missing(name: &str) -> EngineError {
    EngineError::invalid_model(format!("required tensor {name} is missing"))
}

/// The FFN's nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// silu (SwiGLU when gated).
    Silu,
    /// GELU, tanh approximation (GeGLU when gated).
    GeluTanh,
}

/// Feed-forward network of one layer: `down(act(gate(x)) * up(x))` when gated, else
/// `down(act(up(x)))`, each projection with an optional bias.
#[derive(Debug)]
pub struct Ffn {
    /// `(n_ff, n_embd)`; a view of the first half of phi3's fused `ffn_up`.
    pub gate: Option<Linear>,
    /// `(n_ff, n_embd)`.
    pub up: Linear,
    /// `(n_embd, n_ff)`.
    pub down: Linear,
    pub gate_b: Option<Vec<f32>>,
    pub up_b: Option<Vec<f32>>,
    pub down_b: Option<Vec<f32>>,
    pub act: Activation,
}

impl Ffn {
    /// `ffn_gate`, `ffn_up`, `ffn_down`, each with an optional bias (llama.cpp's llama).
    pub fn gated(t: &mut Tensors<'_>, c: &ModelConfig, il: usize, act: Activation) -> Result<Self> {
        let (e, ff) = (c.n_embd, c.n_ff);
        Ok(Ffn {
            gate: Some(t.matrix(&BlockTensor::FfnGate.name(il), e, ff)?),
            up: t.matrix(&BlockTensor::FfnUp.name(il), e, ff)?,
            down: t.matrix(&BlockTensor::FfnDown.name(il), ff, e)?,
            gate_b: t.vector_opt(&BlockTensor::FfnGate.bias_name(il), ff)?,
            up_b: t.vector_opt(&BlockTensor::FfnUp.bias_name(il), ff)?,
            down_b: t.vector_opt(&BlockTensor::FfnDown.bias_name(il), e)?,
            act,
        })
    }

    /// Gate and up fused in one `ffn_up` of `2 * n_ff` rows, gate first (ggml_swiglu of the
    /// whole row activates its first half); `ffn_down`. No biases (phi3).
    pub fn fused_gate_up(
        t: &mut Tensors<'_>,
        c: &ModelConfig,
        il: usize,
        act: Activation,
    ) -> Result<Self> {
        let (e, ff) = (c.n_embd, c.n_ff);
        let [gate, up] = t.matrix_parts(&BlockTensor::FfnUp.name(il), e, [ff, ff])?;
        Ok(Ffn {
            gate: Some(gate),
            up,
            down: t.matrix(&BlockTensor::FfnDown.name(il), ff, e)?,
            gate_b: None,
            up_b: None,
            down_b: None,
            act,
        })
    }

    /// `ffn_up` and `ffn_down` with their required biases, no gate (phi2).
    pub fn plain_with_bias(
        t: &mut Tensors<'_>,
        c: &ModelConfig,
        il: usize,
        act: Activation,
    ) -> Result<Self> {
        let (e, ff) = (c.n_embd, c.n_ff);
        Ok(Ffn {
            gate: None,
            up: t.matrix(&BlockTensor::FfnUp.name(il), e, ff)?,
            down: t.matrix(&BlockTensor::FfnDown.name(il), ff, e)?,
            gate_b: None,
            up_b: Some(t.vector(&BlockTensor::FfnUp.bias_name(il), ff)?),
            down_b: Some(t.vector(&BlockTensor::FfnDown.bias_name(il), e)?),
            act,
        })
    }
}

/// How a layer's two sub-blocks meet the residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residual {
    /// `x += attn(norm(x)); x += ffn(ffn_norm(x))` (each output optionally post-normed).
    Sequential,
    /// `h = norm(x); x += attn(h) + ffn(h)` (phi2).
    Parallel,
}

/// One transformer layer.
#[derive(Debug)]
pub struct Layer {
    pub attn_norm: Norm,
    pub attn: Attention,
    /// Norm of the attention output before the residual add (gemma2, gemma3).
    pub post_attn_norm: Option<Norm>,
    /// Norm of the FFN input (`Residual::Sequential` only).
    pub ffn_norm: Option<Norm>,
    pub ffn: Ffn,
    /// Norm of the FFN output before the residual add (gemma2, gemma3).
    pub post_ffn_norm: Option<Norm>,
}

impl Layer {
    /// Every matrix of the layer (for packing and byte counts).
    pub fn matrices_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        let a = &mut self.attn;
        let f = &mut self.ffn;
        [
            Some(&mut a.wq),
            Some(&mut a.wk),
            Some(&mut a.wv),
            Some(&mut a.wo),
            f.gate.as_mut(),
            Some(&mut f.up),
            Some(&mut f.down),
        ]
        .into_iter()
        .flatten()
    }

    pub fn matrices(&self) -> impl Iterator<Item = &Linear> {
        let a = &self.attn;
        let f = &self.ffn;
        [
            Some(&a.wq),
            Some(&a.wk),
            Some(&a.wv),
            Some(&a.wo),
            f.gate.as_ref(),
            Some(&f.up),
            Some(&f.down),
        ]
        .into_iter()
        .flatten()
    }
}
