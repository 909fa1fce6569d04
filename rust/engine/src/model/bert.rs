//! BERT-family encoder (GGUF architecture `bert`, llama.cpp `src/models/bert.cpp`): sentence
//! embeddings.
//!
//! Forward pass, per input sequence (each already `[CLS] ... [SEP]`):
//! - embeddings: token + absolute position + token type 0, then LayerNorm (`token_embd_norm`);
//! - every block, post-LayerNorm: bidirectional multi-head attention (Q/K/V/O with biases) ->
//!   residual add -> LayerNorm (`attn_output_norm`); FFN `ffn_down(gelu_erf(ffn_up x))` (biases)
//!   -> residual add -> LayerNorm (`layer_output_norm`);
//! - pooling over the final hidden states (mean / [CLS] / last token), optional L2 norm.
//!
//! Batching: all tokens of all inputs are concatenated into one `(n_tokens, n_embd)` matrix, so
//! each weight matrix is read once per batch. Float weights (F32, and F16 / BF16 widened
//! exactly) are packed at load for the f32 GEMM (`hologram_kernels::gemm_f32`): Q, K and V
//! stacked into one matrix (one GEMM writes `[q | k | v]` per token), biases added at the
//! GEMM's stores, GELU applied right after each GEMM task (`gemm_f32_post`), and the residual
//! add and LayerNorm after the O and FFN-down projections on each output row as soon as its
//! task has computed it (`gemm_f32_rows`; the normed rows become the next hidden states, the
//! two buffers swapping roles). Quantized
//! weights (Q8_0, Q4_0, ...) are repacked for the integer kernel (`hologram_kernels::packed`,
//! as the decoders do; the row-major quantized matmul where it does not run) with a separate
//! bias pass. Attention is computed per input (a token only sees the tokens of its own
//! input: the padding mask of a padded batch, without the padding), in parallel over (input,
//! block of query rows) tasks, each task covering all heads of its rows so that it writes one
//! contiguous slice of the output. GELU, attention and LayerNorm are plain loops compiled once per tier
//! (`#[target_feature]` copies of one body): the same operations in the same order, so every
//! tier gives the same bits (as the GEMM does). No KV cache: an encoder sees each input once.
//! Batches larger than [`MAX_BATCH_TOKENS`] are run in slices of whole inputs to bound the
//! scratch memory, which is kept between calls.

use crate::error::{EngineError, Result};
use crate::gguf::keys::{self, arch_key, BlockTensor};
use crate::gguf::GgufFile;
use crate::model::weights::{load_vector, Linear};
use hologram_kernels::packed::{matmul_packed, PackedActs, PackedJob};
use hologram_kernels::simd::{self, Isa};
use hologram_kernels::{
    gemm_f32, gemm_f32_post, gemm_f32_rows, PackedF32, Pool, PostOp, QuantType,
};
use rayon::prelude::*;
use std::sync::Mutex;

/// `general.architecture` of BERT-family encoders.
pub const ARCH_BERT: &str = "bert";
/// `{arch}.pooling_type` (llama.cpp `LLM_KV_POOLING_TYPE`): 0 none, 1 mean, 2 cls, 3 last, 4 rank.
pub const POOLING_TYPE: &str = "pooling_type";
/// `{arch}.attention.causal` (llama.cpp `LLM_KV_ATTENTION_CAUSAL`).
pub const ATTENTION_CAUSAL: &str = "attention.causal";
/// `tokenizer.ggml.token_type_count`: rows of `token_types.weight`.
pub const TOKENIZER_TOKEN_TYPE_COUNT: &str = "tokenizer.ggml.token_type_count";
/// hologram-specific (written by `hologram convert`): the sentence-transformers pipeline ends
/// with L2 normalisation.
pub const EMBEDDING_NORMALIZE: &str = "hologram.embedding.normalize";

// Model-level tensor names (llama.cpp `LLM_TENSOR_NAMES` for LLM_ARCH_BERT).
pub const TOKEN_TYPES: &str = "token_types.weight";
pub const POSITION_EMBD: &str = "position_embd.weight";
pub const TOKEN_EMBD_NORM: &str = "token_embd_norm.weight";
pub const TOKEN_EMBD_NORM_BIAS: &str = "token_embd_norm.bias";
/// Per-layer stems of the two BERT LayerNorms (`blk.{i}.{stem}.weight` / `.bias`).
pub const ATTN_OUTPUT_NORM: &str = "attn_output_norm";
pub const LAYER_OUTPUT_NORM: &str = "layer_output_norm";

/// Most tokens run through one forward pass; larger batches are split between inputs.
pub const MAX_BATCH_TOKENS: usize = 8192;
/// Query rows per attention task.
const ATTN_ROWS_PER_TASK: usize = 16;
/// Rows per parallel task of the element-wise passes (bias, LayerNorm, GELU).
const ROWS_PER_TASK: usize = 32;

const MAX_LAYERS: u64 = 4096;
const MAX_DIM: u64 = 1 << 20;
const MAX_HEADS: u64 = 4096;
const MAX_CTX: u64 = 1 << 24;
const MAX_TOKEN_TYPES: u64 = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Average of all token states.
    Mean,
    /// The first token's state ([CLS]).
    Cls,
    /// The last token's state.
    Last,
    /// No pooling: per-token states only ([`BertModel::hidden_states`]).
    None,
}

/// Pool the per-token states `rows` (`(n, e)`, n >= 1) of one input into `out` (`e`), then
/// L2-normalise it if `normalize`. `Pooling::None` is refused (it keeps every row).
pub fn pool_states(rows: &[f32], pooling: Pooling, normalize: bool, out: &mut [f32]) -> Result<()> {
    let e = out.len();
    let n = rows.len() / e.max(1);
    if n == 0 || rows.len() != n * e {
        return Err(EngineError::InvalidArgument(
            "no token states to pool".into(),
        ));
    }
    match pooling {
        Pooling::Mean => {
            out.fill(0.0);
            for r in rows.chunks_exact(e) {
                for (a, &b) in out.iter_mut().zip(r) {
                    *a += b;
                }
            }
            let inv = 1.0 / n as f32;
            out.iter_mut().for_each(|a| *a *= inv);
        }
        Pooling::Cls => out.copy_from_slice(&rows[..e]),
        Pooling::Last => out.copy_from_slice(&rows[(n - 1) * e..]),
        Pooling::None => {
            return Err(EngineError::InvalidArgument(
                "pooling \"none\" gives one vector per token, not per input".into(),
            ))
        }
    }
    if normalize {
        l2_normalize(out);
    }
    Ok(())
}

/// Scale `v` to unit L2 norm (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&a| (a as f64) * (a as f64))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|a| *a *= inv);
    }
}

impl Pooling {
    /// From the value of `{arch}.pooling_type`; None for values hologram does not support
    /// (4 = rank needs a classifier head).
    pub fn from_gguf(v: u64) -> Option<Pooling> {
        match v {
            0 => Some(Pooling::None),
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Pooling> {
        match name {
            "mean" => Some(Pooling::Mean),
            "cls" => Some(Pooling::Cls),
            "last" => Some(Pooling::Last),
            "none" => Some(Pooling::None),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
            Pooling::None => "none",
        }
    }
}

/// Validated hyper-parameters of a `bert` GGUF.
#[derive(Clone, Debug)]
pub struct BertConfig {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    /// `bert.context_length` (max_position_embeddings): the longest input.
    pub n_ctx_train: usize,
    pub n_token_types: usize,
    pub eps: f32,
    /// The model's pooling (`bert.pooling_type`; `None` when the key is absent).
    pub pooling: Pooling,
    /// The model's pipeline L2-normalises (`hologram.embedding.normalize`; false when absent).
    pub normalize: bool,
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
    usize::try_from(v).map_err(|_| EngineError::invalid_model(format!("{k} = {v} is too large")))
}

impl BertConfig {
    /// Read and validate the `bert.*` keys. `n_vocab` is the tokenizer's vocabulary size.
    pub fn from_gguf(f: &GgufFile, n_vocab: usize) -> Result<Self> {
        let a = ARCH_BERT;
        let k = |s: &str| arch_key(a, s);
        if let Some(arch) = f.get_str(keys::GENERAL_ARCHITECTURE)? {
            if arch != a {
                return Err(EngineError::Unsupported(format!(
                    "architecture {arch:?} is not a BERT encoder"
                )));
            }
        }
        if n_vocab == 0 {
            return Err(EngineError::invalid_model("the vocabulary is empty"));
        }
        let kk = k(keys::EMBEDDING_LENGTH);
        let n_embd = bounded(&kk, req_u64(f, &kk)?, 1, MAX_DIM)?;
        let kk = k(keys::BLOCK_COUNT);
        let n_layer = bounded(&kk, req_u64(f, &kk)?, 1, MAX_LAYERS)?;
        let kk = k(keys::ATTENTION_HEAD_COUNT);
        let n_head = bounded(&kk, req_u64(f, &kk)?, 1, MAX_HEADS)?;
        if n_embd % n_head != 0 {
            return Err(EngineError::invalid_model(format!(
                "{} = {n_embd} is not divisible by {kk} = {n_head}",
                k(keys::EMBEDDING_LENGTH)
            )));
        }
        let kk = k(keys::FEED_FORWARD_LENGTH);
        let n_ff = bounded(&kk, req_u64(f, &kk)?, 1, MAX_DIM)?;
        let kk = k(keys::CONTEXT_LENGTH);
        let n_ctx_train = bounded(&kk, req_u64(f, &kk)?, 1, MAX_CTX)?;
        let n_token_types = match f.get_u64(TOKENIZER_TOKEN_TYPE_COUNT)? {
            Some(v) => bounded(TOKENIZER_TOKEN_TYPE_COUNT, v, 1, MAX_TOKEN_TYPES)?,
            // Older files: take it from the tensor (validated again at load).
            None => match f.tensor(TOKEN_TYPES).and_then(|t| t.dims.get(1).copied()) {
                Some(v) => bounded(TOKEN_TYPES, v, 1, MAX_TOKEN_TYPES)?,
                None => 2,
            },
        };
        let kk = k(keys::ATTENTION_LAYERNORM_EPS);
        let eps = f.get_f32(&kk)?.unwrap_or(1e-12);
        if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
            return Err(EngineError::invalid_model(format!(
                "{kk} = {eps} is not in (0, 1)"
            )));
        }
        if f.get_bool(&k(ATTENTION_CAUSAL))? == Some(true) {
            return Err(EngineError::Unsupported(format!(
                "{} = true: causal BERT models are not supported",
                k(ATTENTION_CAUSAL)
            )));
        }
        let kk = k(POOLING_TYPE);
        let pooling = match f.get_u64(&kk)? {
            None => Pooling::None,
            Some(v) => Pooling::from_gguf(v).ok_or_else(|| {
                EngineError::Unsupported(format!(
                    "{kk} = {v} (supported: 0 none, 1 mean, 2 cls, 3 last)"
                ))
            })?,
        };
        let normalize = f.get_bool(EMBEDDING_NORMALIZE)?.unwrap_or(false);
        Ok(BertConfig {
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            head_dim: n_embd / n_head,
            n_ff,
            n_ctx_train,
            n_token_types,
            eps,
            pooling,
            normalize,
        })
    }
}

/// A matrix with its bias.
#[derive(Debug)]
pub struct Dense {
    pub w: Linear,
    pub b: Vec<f32>,
    /// Float weights (F32 / F16 / BF16) packed for [`gemm_f32`] at load (F16 / BF16 widened
    /// to f32 exactly); quantized weights stay in the file for the quantized matmul.
    pub packed: Option<PackedF32>,
}

/// Whether weights of type `t` go through the packed f32 GEMM (exact widening to f32).
fn packs_to_f32(t: QuantType) -> bool {
    matches!(t, QuantType::F32 | QuantType::F16 | QuantType::BF16)
}

/// Pack the float matrices `parts` (same `cols`) stacked row-wise into one [`PackedF32`].
fn pack_stacked(f: &GgufFile, parts: &[&Linear]) -> Result<PackedF32> {
    let cols = parts.first().map_or(0, |l| l.cols);
    let rows: usize = parts.iter().map(|l| l.rows).sum();
    PackedF32::pack_rows(simd::active(), rows, cols, |mut r, dst| {
        for l in parts {
            if r < l.rows {
                return l.dequantize_row(f, r, dst);
            }
            r -= l.rows;
        }
        Err(EngineError::invalid_model("packed row out of range"))
    })
}

impl From<hologram_kernels::KernelError> for EngineError {
    fn from(e: hologram_kernels::KernelError) -> Self {
        EngineError::invalid_model(format!("packing: {e}"))
    }
}

impl Dense {
    /// Load a matrix and its bias; with `pack`, float weights are packed for [`gemm_f32`];
    /// quantized ones are always repacked for the integer kernel where it runs.
    fn load(
        f: &GgufFile,
        t: BlockTensor,
        layer: usize,
        cols: usize,
        rows: usize,
        pack: bool,
    ) -> Result<Self> {
        let mut w = Linear::load(f, &t.name(layer), cols, rows)?;
        let packed = if !packs_to_f32(w.ttype) {
            // Quantized weights: repacked for the integer kernel where this machine runs it.
            w.pack(f)?;
            None
        } else if pack {
            Some(pack_stacked(f, &[&w])?)
        } else {
            None
        };
        Ok(Dense {
            w,
            b: load_vector(f, &t.bias_name(layer), rows)?,
            packed,
        })
    }
}

/// LayerNorm weight and bias.
#[derive(Debug)]
pub struct Norm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

impl Norm {
    fn load(f: &GgufFile, weight: &str, bias: &str, n: usize) -> Result<Self> {
        Ok(Norm {
            w: load_vector(f, weight, n)?,
            b: load_vector(f, bias, n)?,
        })
    }

    fn load_block(f: &GgufFile, stem: &str, layer: usize, n: usize) -> Result<Self> {
        let p = keys::BLOCK_PREFIX;
        Self::load(
            f,
            &format!("{p}{layer}.{stem}.weight"),
            &format!("{p}{layer}.{stem}.bias"),
            n,
        )
    }
}

#[derive(Debug)]
pub struct BertLayer {
    pub q: Dense,
    pub k: Dense,
    pub v: Dense,
    pub o: Dense,
    pub attn_norm: Norm,
    pub up: Dense,
    pub down: Dense,
    pub out_norm: Norm,
    /// Q, K and V stacked into one `(3 n_embd, n_embd)` packed matrix with its bias, when
    /// all three are float weights: one GEMM writes `[q | k | v]` per token.
    pub qkv: Option<(PackedF32, Vec<f32>)>,
}

#[derive(Debug)]
pub struct BertModel {
    pub cfg: BertConfig,
    pub token_embd: Linear, // (n_vocab, n_embd)
    /// Position embeddings, dequantized: (n_ctx_train, n_embd).
    pub position_embd: Vec<f32>,
    /// Token-type 0 embedding (every input is a single segment).
    pub token_type0: Vec<f32>,
    pub embd_norm: Norm,
    pub layers: Vec<BertLayer>,
    /// Forward-pass buffers, kept between calls (a batch of the same size or smaller
    /// allocates nothing).
    scratch: Mutex<Buffers>,
}

/// Forward-pass buffers. Every element a pass reads was written earlier in the same pass, so
/// they are only ever grown, never cleared.
#[derive(Debug, Default)]
struct Buffers {
    x: Vec<f32>,
    /// `[q | k | v]` per token (`3 n_embd` wide) on the fused path; q, k, v one after the
    /// other (`n_tok * n_embd` each) otherwise.
    qkv: Vec<f32>,
    attn: Vec<f32>,
    tmp: Vec<f32>,
    ff: Vec<f32>,
    mm: Vec<u8>,
    /// Quantized activations for the packed integer matmul (quantized weights).
    acts: PackedActs,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Forward-pass buffers larger than this are freed after the call instead of kept.
const SCRATCH_KEEP_BYTES: usize = 64 << 20;

impl Buffers {
    /// Free the buffers if they hold more than [`SCRATCH_KEEP_BYTES`].
    fn trim(&mut self) {
        let floats =
            self.x.len() + self.qkv.len() + self.attn.len() + self.tmp.len() + self.ff.len();
        if floats * 4 + self.mm.len() > SCRATCH_KEEP_BYTES {
            *self = Buffers::default();
        }
    }

    fn ensure(&mut self, n_tok: usize, e: usize, ff: usize) {
        grow(&mut self.x, n_tok * e);
        grow(&mut self.qkv, 3 * n_tok * e);
        grow(&mut self.attn, n_tok * e);
        grow(&mut self.tmp, n_tok * e);
        grow(&mut self.ff, n_tok * ff);
    }
}

fn kernel_err(what: &str, e: hologram_kernels::KernelError) -> EngineError {
    EngineError::invalid_model(format!("{what}: {e}"))
}

impl BertModel {
    pub fn load(f: &GgufFile, n_vocab: usize) -> Result<Self> {
        let cfg = BertConfig::from_gguf(f, n_vocab)?;
        let (e, v) = (cfg.n_embd, cfg.n_vocab);
        let token_embd = Linear::load(f, keys::TOKEN_EMBD, e, v)?;
        let pos = Linear::load(f, POSITION_EMBD, e, cfg.n_ctx_train)?;
        let mut position_embd = vec![0f32; cfg.n_ctx_train * e];
        for (p, row) in position_embd.chunks_exact_mut(e).enumerate() {
            pos.dequantize_row(f, p, row)?;
        }
        let types = Linear::load(f, TOKEN_TYPES, e, cfg.n_token_types)?;
        let mut token_type0 = vec![0f32; e];
        types.dequantize_row(f, 0, &mut token_type0)?;
        let embd_norm = Norm::load(f, TOKEN_EMBD_NORM, TOKEN_EMBD_NORM_BIAS, e)?;

        let n_blocks = f
            .tensors()
            .iter()
            .filter_map(|t| keys::block_index(&t.name))
            .max();
        if n_blocks.map_or(0, |m| m + 1) != cfg.n_layer {
            return Err(EngineError::invalid_model(format!(
                "{} is {} but the file has tensors for {} blocks",
                arch_key(ARCH_BERT, keys::BLOCK_COUNT),
                cfg.n_layer,
                n_blocks.map_or(0, |m| m + 1)
            )));
        }
        let ff = cfg.n_ff;
        let mut layers = (0..cfg.n_layer)
            .map(|i| {
                Ok(BertLayer {
                    // Q, K, V are packed below (stacked when all three are float).
                    q: Dense::load(f, BlockTensor::AttnQ, i, e, e, false)?,
                    k: Dense::load(f, BlockTensor::AttnK, i, e, e, false)?,
                    v: Dense::load(f, BlockTensor::AttnV, i, e, e, false)?,
                    o: Dense::load(f, BlockTensor::AttnOutput, i, e, e, true)?,
                    attn_norm: Norm::load_block(f, ATTN_OUTPUT_NORM, i, e)?,
                    up: Dense::load(f, BlockTensor::FfnUp, i, e, ff, true)?,
                    down: Dense::load(f, BlockTensor::FfnDown, i, ff, e, true)?,
                    out_norm: Norm::load_block(f, LAYER_OUTPUT_NORM, i, e)?,
                    qkv: None,
                })
            })
            .collect::<Result<Vec<BertLayer>>>()?;
        for l in &mut layers {
            if [&l.q, &l.k, &l.v].iter().all(|d| packs_to_f32(d.w.ttype)) {
                let m = pack_stacked(f, &[&l.q.w, &l.k.w, &l.v.w])?;
                let bias = [&l.q.b[..], &l.k.b, &l.v.b].concat();
                l.qkv = Some((m, bias));
            } else {
                for d in [&mut l.q, &mut l.k, &mut l.v] {
                    if packs_to_f32(d.w.ttype) {
                        d.packed = Some(pack_stacked(f, &[&d.w])?);
                    }
                }
            }
        }
        Ok(BertModel {
            cfg,
            token_embd,
            position_embd,
            token_type0,
            embd_norm,
            layers,
            scratch: Mutex::new(Buffers::default()),
        })
    }

    /// Check every input is non-empty, fits the context and has valid ids.
    fn validate(&self, inputs: &[Vec<u32>]) -> Result<()> {
        for (i, ids) in inputs.iter().enumerate() {
            if ids.is_empty() {
                return Err(EngineError::InvalidArgument(format!(
                    "input {i} has no tokens"
                )));
            }
            if ids.len() > self.cfg.n_ctx_train {
                return Err(EngineError::ContextOverflow(format!(
                    "input {i} has {} tokens, the model takes at most {}",
                    ids.len(),
                    self.cfg.n_ctx_train
                )));
            }
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.cfg.n_vocab) {
                return Err(EngineError::InvalidArgument(format!(
                    "input {i}: token id {bad} is out of range (vocabulary of {})",
                    self.cfg.n_vocab
                )));
            }
        }
        Ok(())
    }

    /// Slices of whole inputs with at most [`MAX_BATCH_TOKENS`] tokens each (a longer single
    /// input is a slice of its own).
    fn slices(inputs: &[Vec<u32>]) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut n) = (0, 0);
        for (i, ids) in inputs.iter().enumerate() {
            if n > 0 && n + ids.len() > MAX_BATCH_TOKENS {
                out.push(start..i);
                start = i;
                n = 0;
            }
            n += ids.len();
        }
        if start < inputs.len() {
            out.push(start..inputs.len());
        }
        out
    }

    /// Embed a batch: pooled vectors (L2-normalised if `normalize`), `(inputs.len(), n_embd)`
    /// row-major into `out`. Each input must already hold its `[CLS] ... [SEP]`.
    pub fn embed(
        &self,
        f: &GgufFile,
        pool: &Pool,
        inputs: &[Vec<u32>],
        pooling: Pooling,
        normalize: bool,
        out: &mut [f32],
    ) -> Result<()> {
        let e = self.cfg.n_embd;
        let no_pooling = || {
            EngineError::InvalidArgument(
                "pooling \"none\" gives one vector per token, not per input".into(),
            )
        };
        if pooling == Pooling::None {
            return Err(no_pooling());
        }
        if out.len() != inputs.len() * e {
            return Err(EngineError::InvalidArgument(format!(
                "output has {} values, expected {} inputs x {e}",
                out.len(),
                inputs.len()
            )));
        }
        self.validate(inputs)?;
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let b = &mut *guard;
        for range in Self::slices(inputs) {
            let batch = &inputs[range.clone()];
            self.forward(f, pool, batch, b)?;
            let hidden = &b.x;
            let mut off = 0;
            for (ids, o) in batch
                .iter()
                .zip(out[range.start * e..range.end * e].chunks_exact_mut(e))
            {
                let n = ids.len();
                pool_states(&hidden[off * e..(off + n) * e], pooling, normalize, o)?;
                off += n;
            }
        }
        b.trim();
        Ok(())
    }

    /// Final hidden states of every token of every input, concatenated: `(sum of lengths,
    /// n_embd)` row-major (pooling "none").
    pub fn hidden_states(
        &self,
        f: &GgufFile,
        pool: &Pool,
        inputs: &[Vec<u32>],
    ) -> Result<Vec<f32>> {
        self.validate(inputs)?;
        let e = self.cfg.n_embd;
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let b = &mut *guard;
        let mut all = Vec::new();
        for range in Self::slices(inputs) {
            let batch = &inputs[range];
            let n_tok: usize = batch.iter().map(Vec::len).sum();
            self.forward(f, pool, batch, b)?;
            all.extend_from_slice(&b.x[..n_tok * e]);
        }
        b.trim();
        Ok(all)
    }

    /// One forward pass over validated inputs; leaves the final hidden states in the first
    /// `n_tokens * n_embd` values of `b.x`.
    fn forward(
        &self,
        f: &GgufFile,
        pool: &Pool,
        inputs: &[Vec<u32>],
        b: &mut Buffers,
    ) -> Result<()> {
        let (e, ffn) = (self.cfg.n_embd, self.cfg.n_ff);
        let n_tok: usize = inputs.iter().map(Vec::len).sum();
        // (first row, length) of every input.
        let spans: Vec<(usize, usize)> = inputs
            .iter()
            .scan(0usize, |off, ids| {
                let s = (*off, ids.len());
                *off += ids.len();
                Some(s)
            })
            .collect();
        b.ensure(n_tok, e, ffn);
        let Buffers {
            x,
            qkv,
            attn,
            tmp,
            ff,
            mm,
            acts,
        } = b;
        let mut x = &mut x[..n_tok * e];
        let b_x = x.as_ptr();
        let qkv = &mut qkv[..3 * n_tok * e];
        let attn = &mut attn[..n_tok * e];
        let mut tmp = &mut tmp[..n_tok * e];
        let ff = &mut ff[..n_tok * ffn];

        // Embeddings.
        {
            let mut rows = x.chunks_exact_mut(e);
            for ids in inputs {
                for (p, (&id, row)) in ids.iter().zip(rows.by_ref()).enumerate() {
                    self.token_embd.dequantize_row(f, id as usize, row)?;
                    let pe = &self.position_embd[p * e..(p + 1) * e];
                    for ((a, &pv), &tv) in row.iter_mut().zip(pe).zip(&self.token_type0) {
                        *a += pv + tv;
                    }
                }
            }
        }
        let eps = self.cfg.eps;
        layer_norm_rows(pool, x, e, &self.embd_norm, eps);

        let isa = simd::active();
        let gelu = |v: &mut [f32]| gelu_slice(isa, v);
        for layer in &self.layers {
            // q, k, v rows at stride `ld`.
            let (q, k, v, ld): (&[f32], &[f32], &[f32], usize) = match &layer.qkv {
                Some((m, bias)) => {
                    gemm_f32(pool, x, n_tok, m, Some(bias), qkv)
                        .map_err(|err| kernel_err(&layer.q.w.info.name, err))?;
                    (&qkv[..], &qkv[e..], &qkv[2 * e..], 3 * e)
                }
                None => {
                    let (qb, rest) = qkv.split_at_mut(n_tok * e);
                    let (kb, vb) = rest.split_at_mut(n_tok * e);
                    // The matrices repacked for the integer kernel share one quantization of
                    // x and one call (when they take the same activation blocks); the others
                    // run on their own.
                    let parts = [(&layer.q, qb), (&layer.k, kb), (&layer.v, vb)];
                    let bs = |d: &Dense| d.w.packed.as_ref().map(|m| m.quant_type().block_size());
                    let first = parts.iter().find_map(|(d, _)| bs(d));
                    let mut jobs = Vec::with_capacity(3);
                    let mut biases = Vec::with_capacity(3);
                    for (d, out) in parts {
                        match (&d.w.packed, first) {
                            (Some(m), Some(b)) if m.quant_type().block_size() == b => {
                                jobs.push(PackedJob { w: m, out });
                                biases.push(&d.b);
                            }
                            _ => self.dense(f, pool, d, x, n_tok, out, mm, acts, None)?,
                        }
                    }
                    if let Some(j0) = jobs.first() {
                        let err = |err| kernel_err(&layer.q.w.info.name, err);
                        acts.quantize_for_pool(pool, j0.w, x, n_tok).map_err(err)?;
                        matmul_packed(pool, &mut jobs, acts).map_err(err)?;
                        for (j, b) in jobs.iter_mut().zip(biases) {
                            add_bias(pool, j.out, b, None);
                        }
                    }
                    let (qb, rest) = qkv.split_at(n_tok * e);
                    let (kb, vb) = rest.split_at(n_tok * e);
                    (qb, kb, vb, e)
                }
            };
            self.attention(pool, &spans, q, k, v, ld, attn);
            // tmp = LayerNorm(x + attn W_o^T + b), then tmp is the new x.
            let res = (&*x, &layer.attn_norm, eps);
            self.dense_add_norm(f, pool, &layer.o, attn, n_tok, tmp, res, mm, acts)?;
            std::mem::swap(&mut x, &mut tmp);

            self.dense(f, pool, &layer.up, x, n_tok, ff, mm, acts, Some(&gelu))?;
            let res = (&*x, &layer.out_norm, eps);
            self.dense_add_norm(f, pool, &layer.down, ff, n_tok, tmp, res, mm, acts)?;
            std::mem::swap(&mut x, &mut tmp);
        }
        if !std::ptr::eq(x.as_ptr(), b_x) {
            // An odd number of swaps: the result is in the other buffer.
            tmp.copy_from_slice(x);
        }
        Ok(())
    }

    /// `out = LayerNorm(res + input W^T + bias)` row by row (BERT's post-LN residual), `res`
    /// = (residual rows, norm, eps). On the packed f32 path the residual add and the norm run
    /// on each output row right after the GEMM task that computed it.
    #[allow(clippy::too_many_arguments)]
    fn dense_add_norm(
        &self,
        f: &GgufFile,
        pool: &Pool,
        d: &Dense,
        input: &[f32],
        n_tok: usize,
        out: &mut [f32],
        (res, norm, eps): (&[f32], &Norm, f32),
        scratch: &mut Vec<u8>,
        acts: &mut PackedActs,
    ) -> Result<()> {
        let e = self.cfg.n_embd;
        if let Some(p) = &d.packed {
            let isa = simd::active();
            let lines = (e * 4).div_ceil(64);
            let op = |i: usize, row: &mut [f32]| {
                // The residual row two ahead, into L2 (the rows come in order within a task).
                if let Some(ahead) = res.get((i + 2) * e..(i + 3) * e) {
                    simd::prefetch_lines_l2(ahead.as_ptr().cast(), lines);
                }
                layer_norm_chunk(isa, row, Some(&res[i * e..(i + 1) * e]), e, norm, eps)
            };
            return gemm_f32_rows(pool, input, n_tok, p, Some(&d.b), out, &op)
                .map_err(|err| kernel_err(&d.w.info.name, err));
        }
        self.dense(f, pool, d, input, n_tok, out, scratch, acts, None)?;
        // out + res == res + out (addition commutes): the same bits as adding in place.
        add_layer_norm_rows(pool, out, res, e, norm, eps);
        Ok(())
    }

    /// `out = post(x W^T + bias)` over `n_tok` rows (`post` element-wise, fused into the
    /// GEMM's stores on the packed path).
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &self,
        f: &GgufFile,
        pool: &Pool,
        d: &Dense,
        x: &[f32],
        n_tok: usize,
        out: &mut [f32],
        scratch: &mut Vec<u8>,
        acts: &mut PackedActs,
        post: Option<PostOp>,
    ) -> Result<()> {
        let w = &d.w;
        if let Some(p) = &d.packed {
            return gemm_f32_post(pool, x, n_tok, p, Some(&d.b), out, post)
                .map_err(|err| kernel_err(&w.info.name, err));
        }
        if let Some(pm) = &w.packed {
            let err = |err| kernel_err(&w.info.name, err);
            acts.quantize_for_pool(pool, pm, x, n_tok).map_err(err)?;
            let out = &mut out[..n_tok * w.rows];
            matmul_packed(
                pool,
                &mut [PackedJob {
                    w: pm,
                    out: &mut *out,
                }],
                acts,
            )
            .map_err(err)?;
            add_bias(pool, out, &d.b, post);
            return Ok(());
        }
        hologram_kernels::matmul(
            pool,
            w.bytes(f),
            w.ttype,
            w.rows,
            w.cols,
            x,
            n_tok,
            out,
            scratch,
        )
        .map_err(|err| kernel_err(&w.info.name, err))?;
        add_bias(pool, &mut out[..n_tok * w.rows], &d.b, post);
        Ok(())
    }

    /// Bidirectional attention of every input over its own tokens: `out` rows of input `i` are
    /// `softmax(q k^T / sqrt(d)) v` per head. Row `t` of q / k / v starts at `t * ld`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        pool: &Pool,
        spans: &[(usize, usize)],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ld: usize,
        out: &mut [f32],
    ) {
        let e = self.cfg.n_embd;
        let shape = AttnShape {
            e,
            ld,
            nh: self.cfg.n_head,
            hd: self.cfg.head_dim,
            scale: 1.0 / (self.cfg.head_dim as f32).sqrt(),
        };
        let isa = simd::active();
        // Tasks: (first row of the input, input length, first query row in the input, the
        // output rows to fill). Disjoint slices of `out`, so the tasks need no synchronisation.
        let mut tasks: Vec<(usize, usize, usize, &mut [f32])> = Vec::new();
        let mut rest: &mut [f32] = out;
        for &(off, len) in spans {
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len * e);
            rest = tail;
            for (c, chunk) in mine.chunks_mut(ATTN_ROWS_PER_TASK * e).enumerate() {
                tasks.push((off, len, c * ATTN_ROWS_PER_TASK, chunk));
            }
        }
        // Each task prefetches the q / k / v rows of the input of the task after it (the pool
        // gives a thread consecutive tasks) unless they are its own.
        let nexts: Vec<std::ops::Range<usize>> = (0..tasks.len())
            .map(|i| match tasks.get(i + 1) {
                Some(&(off, len, ..)) if off != tasks[i].0 => off..off + len,
                _ => 0..0,
            })
            .collect();
        pool.install(|| {
            tasks
                .into_par_iter()
                .zip(nexts)
                .for_each(|((off, len, r0, chunk), next)| {
                    let t = AttnTask {
                        q,
                        k,
                        v,
                        off,
                        r0,
                        next,
                    };
                    attn_task(isa, &shape, &t, len, chunk);
                })
        });
    }
}

/// Rows of `out` (each `bias.len()` wide) += `bias`, then `post` on each row.
fn add_bias(pool: &Pool, out: &mut [f32], bias: &[f32], post: Option<PostOp>) {
    let rows = bias.len().max(1);
    pool.install(|| {
        out.par_chunks_mut(ROWS_PER_TASK * rows).for_each(|c| {
            for r in c.chunks_exact_mut(rows) {
                for (a, &bv) in r.iter_mut().zip(bias) {
                    *a += bv;
                }
                if let Some(op) = post {
                    op(r);
                }
            }
        })
    });
}

/// `fn $name(isa: Isa, args)`: `$body(args)` run with the loops compiled for the tier `isa`.
/// `$body` is `#[inline(always)]`, so each `#[target_feature]` copy below vectorises it for its
/// tier while doing the same operations in the same order (the same bits on every tier).
macro_rules! per_tier {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) => $body:ident) => {
        $(#[$m])*
        fn $name(isa: Isa, $($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($a: $t),*) {
                    $body($($a),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($a: $t),*) {
                    $body($($a),*)
                }
                match isa {
                    // SAFETY: the tier is available (simd::active only returns available tiers).
                    Isa::Avx512 => return unsafe { avx512($($a),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { avx2($($a),*) },
                    _ => {}
                }
            }
            let _ = isa;
            $body($($a),*)
        }
    };
}

/// Attention dimensions: model width, q/k/v row stride, heads, head size, score scale.
struct AttnShape {
    e: usize,
    ld: usize,
    nh: usize,
    hd: usize,
    scale: f32,
}

/// One attention task's inputs: the input's first row `off`, the first query row `r0` within
/// the input.
struct AttnTask<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    off: usize,
    r0: usize,
    /// Rows (of q, k and v) to prefetch for the next task, a part per head.
    next: std::ops::Range<usize>,
}

/// Run one attention task with the loops compiled for `isa` (the same operations in the same
/// order on every tier, so the same bits; only the vector width differs).
fn attn_task(isa: Isa, s: &AttnShape, t: &AttnTask, len: usize, out: &mut [f32]) {
    let lenp = len.next_multiple_of(LANES);
    let mut buf = vec![0f32; lenp * (QB_MAX + s.hd)];
    let (scores, kt) = buf.split_at_mut(QB_MAX * lenp);
    // 8 queries at a time need 8 x LANES floats of accumulators: 8 registers with AVX-512,
    // 16 (all of them) with AVX2, so AVX2 takes 4.
    let wide = isa == Isa::Avx512;
    attn_task_tier(isa, s, t, len, wide, scores, kt, out)
}

per_tier!(
    #[allow(clippy::too_many_arguments)]
    fn attn_task_tier(
        s: &AttnShape,
        t: &AttnTask,
        len: usize,
        wide: bool,
        scores: &mut [f32],
        kt: &mut [f32],
        out: &mut [f32]
    ) => attn_task_body
);

/// Vector width of the attention loops (fixed-size blocks that stay in registers).
const LANES: usize = 16;

/// Queries processed together by the attention loops (independent accumulators: the loops
/// are bound by FMA throughput instead of add latency).
const QB: usize = 4;
/// [`QB`] with 32 vector registers (AVX-512): twice the independent chains.
const QB_MAX: usize = 8;

/// One task: the rows `out` (query rows `r0..` of the input at `off`, `len` tokens) for every
/// head. Per head, K is transposed once into `kt` (`hd x lenp`, `lenp` = `len` rounded up to
/// [`LANES`], the padding zero) so that the scores of a query are accumulated [`LANES`] keys
/// at a time in registers (`scores`: [`QB`] or [`QB_MAX`] x `lenp` values), and P V [`LANES`]
/// dimensions at a time, that many queries side by side (fused multiply-adds). Every score is
/// `(sum over d ascending of q[d] k[j][d]) * scale`, every output `sum over j ascending of
/// p[j] v[j][d]`, on every tier.
#[inline(always)]
fn attn_task_body(
    s: &AttnShape,
    t: &AttnTask,
    len: usize,
    wide: bool,
    scores: &mut [f32],
    kt: &mut [f32],
    out: &mut [f32],
) {
    let (ld, hd) = (s.ld, s.hd);
    let lenp = scores.len() / QB_MAX;
    let n_rows = out.len() / s.e;
    for h in 0..s.nh {
        let c0 = h * hd;
        // This head's part of the next task's rows, into L2 (they are in L3 at best).
        let nn = t.next.len();
        for r in t.next.start + h * nn / s.nh..t.next.start + (h + 1) * nn / s.nh {
            for x in [t.q, t.k, t.v] {
                // An address for a hint (never dereferenced): no bounds to check.
                let row = x.as_ptr().wrapping_add(r * ld).cast::<u8>();
                simd::prefetch_lines_l2(row, (s.e * 4).div_ceil(64));
            }
        }
        transpose_k(wide, t.k, (t.off * ld + c0, ld), len, hd, kt, lenp);
        let mut rr = 0;
        if wide {
            while rr + QB_MAX <= n_rows {
                attn_rows::<QB_MAX>(s, t, len, lenp, c0, rr, scores, kt, out);
                rr += QB_MAX;
            }
        }
        while rr + QB <= n_rows {
            attn_rows::<QB>(s, t, len, lenp, c0, rr, scores, kt, out);
            rr += QB;
        }
        while rr < n_rows {
            attn_rows::<1>(s, t, len, lenp, c0, rr, scores, kt, out);
            rr += 1;
        }
    }
}

/// `kt[d * lenp + j] = k[base + j * ld + d]` for `d < hd`, `j < len` (one head's keys
/// transposed; `src` = (base, ld)). With `wide` (AVX-512 available) in 16 x 16 blocks of
/// register shuffles, else element by element; a data move either way (the same values).
#[inline(always)]
fn transpose_k(
    wide: bool,
    k: &[f32],
    (base, ld): (usize, usize),
    len: usize,
    hd: usize,
    kt: &mut [f32],
    lenp: usize,
) {
    if len == 0 || hd == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if wide
        && base + (len - 1) * ld + hd <= k.len()
        && hd <= ld
        && (hd - 1) * lenp + len.next_multiple_of(16) <= kt.len()
    {
        // SAFETY: `wide` is set only when AVX-512 is available (attn_task); the bounds
        // checked above are the ones transpose16_avx512 reads and writes.
        unsafe { transpose16_avx512(k.as_ptr().add(base), ld, len, hd, kt.as_mut_ptr(), lenp) };
        return;
    }
    let _ = wide;
    for j in 0..len {
        let kr = base + j * ld;
        for (d, &kv) in k[kr..kr + hd].iter().enumerate() {
            kt[d * lenp + j] = kv;
        }
    }
}

/// [`transpose_k`] with AVX-512: blocks of 16 keys x 16 dimensions are loaded (masked at the
/// edges, missing keys read as 0), transposed with 64 in-register shuffles and stored as 16
/// rows of 16 values.
///
/// # Safety
/// AVX-512F is available; `k` is readable at `j * ld + d` for `j < len`, `d < hd`; `kt` is
/// writable at `d * lenp + j` for `d < hd`, `j < len.next_multiple_of(16)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16_avx512(
    k: *const f32,
    ld: usize,
    len: usize,
    hd: usize,
    kt: *mut f32,
    lenp: usize,
) {
    use std::arch::x86_64::*;
    for jb in (0..len).step_by(16) {
        for d0 in (0..hd).step_by(16) {
            let nd = (hd - d0).min(16);
            let mask = ((1u32 << nd) - 1) as __mmask16;
            let mut r: [__m512; 16] = std::array::from_fn(|i| {
                // Keys past `len` read nothing (an all-zero mask: no access, no fault).
                let m = if jb + i < len { mask } else { 0 };
                let p = k.wrapping_add((jb + i) * ld + d0);
                // SAFETY: the lanes of m are dimensions d0..d0 + nd <= hd of key jb + i < len.
                unsafe { _mm512_maskz_loadu_ps(m, p) }
            });
            // Pairs of rows interleaved, then pairs of pairs: afterwards, in every 128-bit
            // lane L, r[4g + i] holds rows 4g..4g + 4 at column 4L + i.
            let mut t = [_mm512_setzero_ps(); 16];
            for p in 0..8 {
                t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
                t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
            }
            let pd = _mm512_castps_pd;
            let ps = _mm512_castpd_ps;
            for g in 0..4 {
                let (a0, a1, b0, b1) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
                r[4 * g] = ps(_mm512_unpacklo_pd(pd(a0), pd(b0)));
                r[4 * g + 1] = ps(_mm512_unpackhi_pd(pd(a0), pd(b0)));
                r[4 * g + 2] = ps(_mm512_unpacklo_pd(pd(a1), pd(b1)));
                r[4 * g + 3] = ps(_mm512_unpackhi_pd(pd(a1), pd(b1)));
            }
            // Gather the 128-bit lanes: column 4L + i is [r[i].L, r[4+i].L, r[8+i].L,
            // r[12+i].L].
            for i in 0..4 {
                t[i] = _mm512_shuffle_f32x4::<0x88>(r[i], r[4 + i]);
                t[4 + i] = _mm512_shuffle_f32x4::<0xdd>(r[i], r[4 + i]);
                t[8 + i] = _mm512_shuffle_f32x4::<0x88>(r[8 + i], r[12 + i]);
                t[12 + i] = _mm512_shuffle_f32x4::<0xdd>(r[8 + i], r[12 + i]);
            }
            for i in 0..4 {
                r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
                r[4 + i] = _mm512_shuffle_f32x4::<0x88>(t[4 + i], t[12 + i]);
                r[8 + i] = _mm512_shuffle_f32x4::<0xdd>(t[i], t[8 + i]);
                r[12 + i] = _mm512_shuffle_f32x4::<0xdd>(t[4 + i], t[12 + i]);
            }
            for (c, rc) in r.iter().enumerate().take(nd) {
                // SAFETY: dimension d0 + c < hd, keys jb..jb + 16 <= len rounded up to 16.
                unsafe { _mm512_storeu_ps(kt.add((d0 + c) * lenp + jb), *rc) };
            }
        }
    }
}

/// Head `c0 / hd` of the `R` query rows `rr..rr + R` of a task (see [`attn_task_body`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attn_rows<const R: usize>(
    s: &AttnShape,
    t: &AttnTask,
    len: usize,
    lenp: usize,
    c0: usize,
    rr: usize,
    scores: &mut [f32],
    kt: &[f32],
    out: &mut [f32],
) {
    let (ld, hd, e) = (s.ld, s.hd, s.e);
    let qi: [usize; R] = std::array::from_fn(|q| (t.off + t.r0 + rr + q) * ld + c0);
    for jb in (0..lenp).step_by(LANES) {
        let mut acc = [[0f32; LANES]; R];
        for d in 0..hd {
            let kb = &kt[d * lenp + jb..d * lenp + jb + LANES];
            for (q, aq) in acc.iter_mut().enumerate() {
                let qd = t.q[qi[q] + d];
                for (a, &kv) in aq.iter_mut().zip(kb) {
                    *a = qd.mul_add(kv, *a);
                }
            }
        }
        for (q, aq) in acc.iter().enumerate() {
            for (sc, &a) in scores[q * lenp + jb..q * lenp + jb + LANES]
                .iter_mut()
                .zip(aq)
            {
                *sc = a * s.scale;
            }
        }
    }
    for q in 0..R {
        let row = &mut scores[q * lenp..(q + 1) * lenp];
        row[len..].fill(f32::NEG_INFINITY);
        softmax_row(row, len);
    }
    let mut db = 0;
    while db + LANES <= hd {
        let mut acc = [[0f32; LANES]; R];
        for j in 0..len {
            let vr = (t.off + j) * ld + c0 + db;
            let vb = &t.v[vr..vr + LANES];
            for (q, aq) in acc.iter_mut().enumerate() {
                let pj = scores[q * lenp + j];
                for (a, &vv) in aq.iter_mut().zip(vb) {
                    *a = pj.mul_add(vv, *a);
                }
            }
        }
        for (q, aq) in acc.iter().enumerate() {
            let o = (rr + q) * e + c0 + db;
            out[o..o + LANES].copy_from_slice(aq);
        }
        db += LANES;
    }
    for dd in db..hd {
        for q in 0..R {
            let mut a = 0f32;
            for j in 0..len {
                a = scores[q * lenp + j].mul_add(t.v[(t.off + j) * ld + c0 + dd], a);
            }
            out[(rr + q) * e + c0 + dd] = a;
        }
    }
}

/// In-place softmax of the scores `x[..len]` in a row of whole [`LANES`] blocks whose tail
/// `x[len..]` is -inf (0 on return), with [`exp_f32`] (vectorisable; no libm call per score).
/// The maximum and the sum are taken over [`LANES`] partial results (block by block), then
/// combined by halves (a fixed tree: the same order whatever the vector width).
#[inline(always)]
fn softmax_row(x: &mut [f32], len: usize) {
    let mut mx = [f32::NEG_INFINITY; LANES];
    for c in x.chunks_exact(LANES) {
        for (m, &v) in mx.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = tree(mx, |a, b| if b > a { b } else { a });
    for v in x.iter_mut() {
        *v = exp_f32(*v - max);
    }
    x[len..].fill(0.0);
    let mut acc = [0f32; LANES];
    for c in x.chunks_exact(LANES) {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let inv = 1.0 / tree(acc, |a, b| a + b);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `v` folded by halves with `f`: `v[l] = f(v[l], v[l + w])` for w = LANES / 2, ..., 1.
#[inline(always)]
fn tree(mut v: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            v[l] = f(v[l], v[l + w]);
        }
        w /= 2;
    }
    v[0]
}

per_tier!(
    /// GELU ([`gelu_erf_fast`]) over `x`, the loop compiled for `isa` (same bits on every tier).
    fn gelu_slice(x: &mut [f32]) => gelu_body
);

#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    x.iter_mut().for_each(|a| *a = gelu_erf_fast(*a));
}

/// `exp(x)` in f32 without libm calls, so loops over slices vectorise (Cephes `expf`: range
/// reduction by ln 2 and a degree-6 polynomial; relative error ~2e-7; input clamped to
/// [-87, 88], which only matters where the result under/overflows anyway).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2) with the 1.5 * 2^23 trick (round-to-nearest without a libm call).
    let n = x.mul_add(std::f32::consts::LOG2_E, 12_582_912.0) - 12_582_912.0;
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let p = 1.987_569_2e-4f32
        .mul_add(r, 1.398_2e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^n: n + 127 is an integer in [1, 254]; adding 2^23 puts it in the low mantissa bits.
    let pow2 = f32::from_bits(((n + 127.0) + 8_388_608.0).to_bits() << 23);
    y * pow2
}

/// GELU with the exact erf form, `0.5 x (1 + erf(x / sqrt 2))`, vectorisable: erf from
/// Abramowitz-Stegun 7.1.26 (absolute error <= 1.5e-7) over [`exp_f32`]. `ops::gelu_erf`
/// computes erf in f64 through libm and is ~10x slower on the FFN's n_tokens x n_ff values.
#[inline(always)]
fn gelu_erf_fast(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let az = z.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(az, 1.0);
    let poly = 1.061_405_4f32
        .mul_add(t, -1.453_152_1)
        .mul_add(t, 1.421_413_7)
        .mul_add(t, -0.284_496_74)
        .mul_add(t, 0.254_829_6)
        * t;
    let erf_abs = (-poly).mul_add(exp_f32(-az * az), 1.0);
    let hx = 0.5 * x;
    hx.mul_add(erf_abs.copysign(z), hx)
}

/// In-place LayerNorm of every `e`-wide row of `x`.
fn layer_norm_rows(pool: &Pool, x: &mut [f32], e: usize, n: &Norm, eps: f32) {
    let isa = simd::active();
    pool.install(|| {
        x.par_chunks_mut(ROWS_PER_TASK * e)
            .for_each(|c| layer_norm_chunk(isa, c, None, e, n, eps))
    });
}

/// `x = LayerNorm(x + y)` row by row (the post-LN residual).
fn add_layer_norm_rows(pool: &Pool, x: &mut [f32], y: &[f32], e: usize, n: &Norm, eps: f32) {
    let isa = simd::active();
    pool.install(|| {
        x.par_chunks_mut(ROWS_PER_TASK * e)
            .zip(y.par_chunks(ROWS_PER_TASK * e))
            .for_each(|(c, yc)| layer_norm_chunk(isa, c, Some(yc), e, n, eps))
    });
}

per_tier!(
    /// Rows of `x` (plus the rows of `y`, if any) LayerNorm'ed in place, the loops compiled
    /// for `isa` (same bits on every tier).
    fn layer_norm_chunk(x: &mut [f32], y: Option<&[f32]>, e: usize, n: &Norm, eps: f32)
        => layer_norm_body
);

/// Sum of `f(v)` over `x` in f64 with 8 partial sums (a vector loop), then the tail.
#[inline(always)]
fn sum_f64(x: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let ch = x.chunks_exact(8);
    let tail: f64 = ch.remainder().iter().map(|&v| f(v as f64)).sum();
    for c in ch {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// LayerNorm with the mean and variance accumulated in f64 (as `ops::layer_norm`).
#[inline(always)]
fn layer_norm_body(x: &mut [f32], y: Option<&[f32]>, e: usize, n: &Norm, eps: f32) {
    for (ri, r) in x.chunks_exact_mut(e).enumerate() {
        if let Some(y) = y {
            for (a, &b) in r.iter_mut().zip(&y[ri * e..(ri + 1) * e]) {
                *a += b;
            }
        }
        let cnt = e.max(1) as f64;
        let mean = sum_f64(r, |v| v) / cnt;
        let var = sum_f64(r, |v| (v - mean) * (v - mean)) / cnt;
        let inv = (1.0 / (var + eps as f64).sqrt()) as f32;
        let mean = mean as f32;
        for ((a, &w), &b) in r.iter_mut().zip(&n.w).zip(&n.b) {
            *a = (*a - mean) * inv * w + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hologram_kernels::ops;

    #[test]
    fn attention_matches_f64_reference_on_every_tier() {
        // Odd sizes: 21 tokens (not a multiple of LANES), head size 20 (a LANES block and a
        // tail), q/k/v interleaved at stride 3e as on the fused path.
        let (nh, hd, len) = (3, 20, 21);
        let e = nh * hd;
        let ld = 3 * e;
        let qkv: Vec<f32> = (0..len * ld)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.5)
            .collect();
        let (q, k, v) = (&qkv[..], &qkv[e..], &qkv[2 * e..]);
        let shape = AttnShape {
            e,
            ld,
            nh,
            hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let mut want = vec![0f64; len * e];
        for i in 0..len {
            for h in 0..nh {
                let c0 = h * hd;
                let sc: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..hd)
                            .map(|d| q[i * ld + c0 + d] as f64 * k[j * ld + c0 + d] as f64)
                            .sum::<f64>()
                            * shape.scale as f64
                    })
                    .collect();
                let mx = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|x| (x - mx).exp()).sum();
                for d in 0..hd {
                    want[i * e + c0 + d] = (0..len)
                        .map(|j| (sc[j] - mx).exp() / z * v[j * ld + c0 + d] as f64)
                        .sum();
                }
            }
        }
        let mut first: Option<Vec<f32>> = None;
        for isa in hologram_kernels::simd::available() {
            let mut got = vec![f32::NAN; len * e];
            // Two tasks as `attention` makes them: rows 0..16 and 16..21.
            let (a, b) = got.split_at_mut(16 * e);
            for (r0, chunk) in [(0, a), (16, b)] {
                let t = AttnTask {
                    q,
                    k,
                    v,
                    off: 0,
                    r0,
                    // Prefetching (a hint) must leave the values alone: some rows are given.
                    next: 0..len,
                };
                attn_task(isa, &shape, &t, len, chunk);
            }
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 2e-6, "{isa:?} [{i}]: {g} vs {w}");
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa:?} differs from scalar"
                ),
            }
        }
    }

    #[test]
    fn layer_norm_matches_ops_on_every_tier() {
        let e = 389; // not a multiple of the 8-wide partial sums
        let x: Vec<f32> = (0..3 * e)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.07)
            .collect();
        let y: Vec<f32> = (0..3 * e)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) * 0.11)
            .collect();
        let n = Norm {
            w: (0..e).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect(),
            b: (0..e).map(|i| (i % 5) as f32 * 0.01 - 0.02).collect(),
        };
        let mut want = vec![0f32; 3 * e];
        for r in 0..3 {
            let s: Vec<f32> = (0..e).map(|i| x[r * e + i] + y[r * e + i]).collect();
            ops::layer_norm(&s, &n.w, &n.b, 1e-12, &mut want[r * e..(r + 1) * e]);
        }
        let mut first: Option<Vec<f32>> = None;
        for isa in hologram_kernels::simd::available() {
            let mut got = x.clone();
            layer_norm_chunk(isa, &mut got, Some(&y), e, &n, 1e-12);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{isa:?}: {g} vs {w}"
                );
            }
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(f, &got, "{isa:?} differs from scalar"),
            }
        }
    }

    #[test]
    fn pooling_values_follow_llama_cpp() {
        assert_eq!(Pooling::from_gguf(0), Some(Pooling::None));
        assert_eq!(Pooling::from_gguf(1), Some(Pooling::Mean));
        assert_eq!(Pooling::from_gguf(2), Some(Pooling::Cls));
        assert_eq!(Pooling::from_gguf(3), Some(Pooling::Last));
        assert_eq!(Pooling::from_gguf(4), None);
        for p in [Pooling::Mean, Pooling::Cls, Pooling::Last, Pooling::None] {
            assert_eq!(Pooling::from_name(p.name()), Some(p));
        }
    }

    #[test]
    fn fast_gelu_matches_exact_gelu() {
        let mut worst = 0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // [-20, 20]
            let d = (gelu_erf_fast(x) - ops::gelu_erf(x)).abs();
            worst = worst.max(d / x.abs().max(1.0));
        }
        assert!(worst < 5e-7, "worst scaled error {worst}");
        assert_eq!(gelu_erf_fast(0.0), 0.0);
        assert!(gelu_erf_fast(-100.0).abs() < 1e-20 && gelu_erf_fast(100.0) == 100.0);
        for x in [-80.0f32, -3.0, -0.5, 0.0, 0.5, 3.0, 80.0] {
            let (a, b) = (exp_f32(x), (x as f64).exp() as f32);
            assert!((a - b).abs() <= 4e-7 * b, "exp({x}) = {a}, want {b}");
        }
    }

    #[test]
    fn slices_keep_inputs_whole_and_bounded() {
        let inputs: Vec<Vec<u32>> = (0..40).map(|_| vec![1; 500]).collect();
        let s = BertModel::slices(&inputs);
        assert_eq!(s.first().map(|r| r.start), Some(0));
        assert_eq!(s.last().map(|r| r.end), Some(40));
        for w in s.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &s {
            assert!(r.len() * 500 <= MAX_BATCH_TOKENS);
        }
        let big = vec![vec![1u32; MAX_BATCH_TOKENS + 5], vec![1; 3]];
        assert_eq!(BertModel::slices(&big), vec![0..1, 1..2]);
        assert!(BertModel::slices(&[]).is_empty());
    }
}
