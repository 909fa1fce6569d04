//! The decoder-only transformer forward pass shared by the llama and gemma3 architectures.
//!
//! One pass runs a batch of rows, each a `(sequence, position, token)`: a prompt prefill is many
//! positions of one sequence, a batched decode step is one position of many sequences; both go
//! through the same code. Matrix products over the batch are quantized matmuls (weights read
//! once per batch); attention reads each row's own sequence from the KV block pool.
//!
//! Per-architecture differences are data, chosen at load (see `llama.rs`, `gemma3.rs`):
//! - llama (llama.cpp `src/models/llama.cpp`): RMSNorm -> attention (RoPE NORM, GQA) ->
//!   residual; RMSNorm -> SwiGLU FFN -> residual.
//! - gemma3 (llama.cpp `src/models/gemma3.cpp`): embeddings scaled by sqrt(n_embd); per-head
//!   RMSNorm of Q and K; RMSNorm after attention and after the FFN (before each residual add);
//!   GeGLU (tanh) FFN; sliding-window layers with their own RoPE base; RoPE NEOX.

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use crate::kv::{KvPool, SeqId};
use crate::model::attention::attention;
use crate::model::config::{Arch, ModelConfig};
use crate::model::weights::{load_vector, load_vector_opt, Linear};
use hologram_kernels::ops;
use hologram_kernels::packed::{matmul_packed, PackedActs, PackedJob};
use hologram_kernels::Pool;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: silu(gate) * up.
    Silu,
    /// GeGLU with the tanh GELU: gelu(gate) * up.
    GeluTanh,
}

#[derive(Debug)]
pub struct Layer {
    pub attn_norm: Vec<f32>,              // (n_embd)
    pub wq: Linear,                       // (n_head * head_dim, n_embd)
    pub wk: Linear,                       // (n_head_kv * head_dim, n_embd)
    pub wv: Linear,                       // (n_head_kv * head_dim_v, n_embd)
    pub wo: Linear,                       // (n_embd, n_head * head_dim_v)
    pub q_norm: Option<Vec<f32>>,         // (head_dim), gemma3
    pub k_norm: Option<Vec<f32>>,         // (head_dim), gemma3
    pub post_attn_norm: Option<Vec<f32>>, // (n_embd), gemma3
    pub ffn_norm: Vec<f32>,               // (n_embd)
    pub w_gate: Linear,                   // (n_ff, n_embd)
    pub w_up: Linear,                     // (n_ff, n_embd)
    pub w_down: Linear,                   // (n_embd, n_ff)
    pub post_ffn_norm: Option<Vec<f32>>,  // (n_embd), gemma3
}

#[derive(Debug)]
pub struct DecoderModel {
    pub cfg: ModelConfig,
    pub token_embd: Linear,    // (n_vocab, n_embd)
    pub output_norm: Vec<f32>, // (n_embd)
    pub output: Linear,        // (n_vocab, n_embd); token_embd when tied
    pub tied_output: bool,
    pub layers: Vec<Layer>,
    pub activation: Activation,
    /// Multiplier of the token embeddings (gemma: sqrt(n_embd)).
    pub embd_scale: f32,
}

/// One row of a forward batch.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub seq: SeqId,
    pub pos: usize,
    pub token: u32,
}

/// What a forward pass hands back.
pub enum Output<'a> {
    /// Nothing (prompt chunks whose logits nobody needs).
    None,
    /// Logits of the rows listed in `rows` (indices into the batch), row after row:
    /// `out` is `(rows.len(), n_vocab)`.
    Logits {
        rows: &'a [usize],
        out: &'a mut [f32],
    },
    /// Final hidden states (after the output norm) of every row: `(n_rows, n_embd)`.
    Hidden(&'a mut [f32]),
}

impl DecoderModel {
    pub fn load(f: &GgufFile, cfg: ModelConfig) -> Result<Self> {
        let (e, v) = (cfg.n_embd, cfg.n_vocab);
        let token_embd = Linear::load(f, "token_embd.weight", e, v)?;
        let output_norm = load_vector(f, "output_norm.weight", e)?;
        let (output, tied_output) = match Linear::load_opt(f, "output.weight", e, v)? {
            Some(o) => (o, false),
            None => (token_embd.clone(), true),
        };
        // The number of blk.N tensors must agree with block_count (RELIABILITY G32).
        let max_blk = f
            .tensors()
            .iter()
            .filter_map(|t| {
                t.name
                    .strip_prefix("blk.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max();
        if max_blk.map_or(0, |m| m + 1) != cfg.n_layer {
            return Err(EngineError::invalid_model(format!(
                "{}.block_count is {} but the file has tensors for {} blocks",
                cfg.arch.name(),
                cfg.n_layer,
                max_blk.map_or(0, |m| m + 1)
            )));
        }
        let gemma = cfg.arch == Arch::Gemma3;
        let (hd, hdv) = (cfg.head_dim, cfg.head_dim_v);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let opt_norm = |s: &str, len: usize| -> Result<Option<Vec<f32>>> {
                if gemma {
                    load_vector(f, &n(s), len).map(Some)
                } else {
                    load_vector_opt(f, &n(s), len)
                }
            };
            layers.push(Layer {
                attn_norm: load_vector(f, &n("attn_norm"), e)?,
                wq: Linear::load(f, &n("attn_q"), e, cfg.n_head * hd)?,
                wk: Linear::load(f, &n("attn_k"), e, cfg.n_head_kv * hd)?,
                wv: Linear::load(f, &n("attn_v"), e, cfg.n_head_kv * hdv)?,
                wo: Linear::load(f, &n("attn_output"), cfg.n_head * hdv, e)?,
                q_norm: opt_norm("attn_q_norm", hd)?,
                k_norm: opt_norm("attn_k_norm", hd)?,
                post_attn_norm: opt_norm("post_attention_norm", e)?,
                ffn_norm: load_vector(f, &n("ffn_norm"), e)?,
                w_gate: Linear::load(f, &n("ffn_gate"), e, cfg.n_ff)?,
                w_up: Linear::load(f, &n("ffn_up"), e, cfg.n_ff)?,
                w_down: Linear::load(f, &n("ffn_down"), cfg.n_ff, e)?,
                post_ffn_norm: opt_norm("post_ffw_norm", e)?,
            });
        }
        // Repack the matrices for the packed kernel where it runs (see `Linear::pack`) and
        // release their mapped pages. A tied embedding table too: its rows are still looked up,
        // but a lookup faults in only the pages of the tokens it reads.
        let mut output = output;
        for l in &mut layers {
            for w in [
                &mut l.wq,
                &mut l.wk,
                &mut l.wv,
                &mut l.wo,
                &mut l.w_gate,
                &mut l.w_up,
                &mut l.w_down,
            ] {
                w.pack(f)?;
            }
        }
        output.pack(f)?;
        Ok(DecoderModel {
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            embd_scale: if gemma { (e as f32).sqrt() } else { 1.0 },
            cfg,
            token_embd,
            output_norm,
            output,
            tied_output,
            layers,
        })
    }

    /// Bytes of weights read per decoded token (all matrices, the output once).
    pub fn weight_bytes(&self) -> usize {
        let mut b = self.output.info.nbytes as usize;
        for l in &self.layers {
            for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                b += w.info.nbytes as usize;
            }
        }
        b
    }
}

/// Activation buffers for up to `n_batch` rows, allocated once.
pub struct Scratch {
    n_batch: usize,
    x: Vec<f32>,        // (n_batch, n_embd) residual stream
    xn: Vec<f32>,       // (n_batch, n_embd) normalised input of a sub-block
    q: Vec<f32>,        // (n_batch, n_head * head_dim)
    k: Vec<f32>,        // (n_batch, n_head_kv * head_dim)
    v: Vec<f32>,        // (n_batch, n_head_kv * head_dim_v)
    att: Vec<f32>,      // (n_batch, n_head * head_dim_v)
    tmp: Vec<f32>,      // (n_batch, n_embd) sub-block output
    gate: Vec<f32>,     // (n_batch, n_ff)
    up: Vec<f32>,       // (n_batch, n_ff)
    rope: Vec<f32>,     // (n_batch, rope_dims) interleaved cos/sin
    rope_swa: Vec<f32>, // (n_batch, rope_dims), sliding-window layers' base
    qbuf: Vec<u8>,      // quantized activations for matmul
    pacts: PackedActs,  // quantized activations for packed matmuls
}

impl Scratch {
    pub fn new(cfg: &ModelConfig, n_batch: usize) -> Self {
        let n = n_batch;
        Scratch {
            n_batch,
            x: vec![0.0; n * cfg.n_embd],
            xn: vec![0.0; n * cfg.n_embd],
            q: vec![0.0; n * cfg.n_head * cfg.head_dim],
            k: vec![0.0; n * cfg.n_head_kv * cfg.head_dim],
            v: vec![0.0; n * cfg.n_head_kv * cfg.head_dim_v],
            att: vec![0.0; n * cfg.n_head * cfg.head_dim_v],
            tmp: vec![0.0; n * cfg.n_embd],
            gate: vec![0.0; n * cfg.n_ff],
            up: vec![0.0; n * cfg.n_ff],
            rope: vec![0.0; n * cfg.rope_dims],
            rope_swa: vec![0.0; n * cfg.rope_dims],
            qbuf: Vec::new(),
            pacts: PackedActs::default(),
        }
    }
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }
}

#[allow(clippy::too_many_arguments)]
fn mm(
    pool: &Pool,
    f: &GgufFile,
    w: &Linear,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    q: &mut Vec<u8>,
    pa: &mut PackedActs,
) -> Result<()> {
    if let Some(pm) = &w.packed {
        let err = |e| EngineError::Internal(format!("{}: {e}", w.info.name));
        pa.quantize_for_pool(pool, pm, &x[..n * w.cols], n)
            .map_err(err)?;
        return matmul_packed(
            pool,
            &mut [PackedJob {
                w: pm,
                out: &mut out[..n * w.rows],
            }],
            pa,
        )
        .map_err(err);
    }
    hologram_kernels::matmul(
        pool,
        w.bytes(f),
        w.ttype,
        w.rows,
        w.cols,
        &x[..n * w.cols],
        n,
        &mut out[..n * w.rows],
        q,
    )
    .map_err(|e| EngineError::Internal(format!("{}: {e}", w.info.name)))
}

/// `gate = act(gate) * up`, split over the pool when there is enough work (prompt chunks).
fn activate(pool: &Pool, act: Activation, gate: &mut [f32], up: &[f32]) {
    const CHUNK: usize = 8192;
    let f = match act {
        Activation::Silu => ops::swiglu_inplace,
        Activation::GeluTanh => ops::geglu_inplace,
    };
    if gate.len() <= CHUNK || pool.n_threads() == 1 {
        f(gate, up);
        return;
    }
    pool.install(|| {
        gate.par_chunks_mut(CHUNK)
            .zip(up.par_chunks(CHUNK))
            .for_each(|(g, u)| f(g, u));
    });
}

/// Several matrices applied to the same input `x` (`n` rows of `cols`).
fn mm_multi<const K: usize>(
    pool: &Pool,
    f: &GgufFile,
    jobs: [(&Linear, &mut [f32]); K],
    x: &[f32],
    n: usize,
    q: &mut Vec<u8>,
    pa: &mut PackedActs,
) -> Result<()> {
    let cols = jobs[0].0.cols;
    let names: [&str; K] = std::array::from_fn(|i| jobs[i].0.info.name.as_str());
    if jobs.iter().all(|(w, _)| w.packed.is_some()) {
        let err = |e| EngineError::Internal(format!("{}: {e}", names.join("+")));
        // A fixed array: the decode loop allocates nothing.
        let mut pj = jobs.map(|(w, out)| PackedJob {
            w: match w.packed.as_deref() {
                Some(pm) => pm,
                None => unreachable!("every job was checked to be packed"),
            },
            out: &mut out[..n * w.rows],
        });
        // K-quant jobs take llama.cpp's Q8_K activations, the others 32-value blocks; jobs of
        // both kinds in one call (unusual) run in two groups.
        let k = pj
            .iter()
            .filter(|j| j.w.quant_type().block_size() == 256)
            .count();
        if k == 0 || k == K {
            pa.quantize_for_pool(pool, pj[0].w, &x[..n * cols], n)
                .map_err(err)?;
            return matmul_packed(pool, &mut pj, pa).map_err(err);
        }
        for j in pj.iter_mut() {
            pa.quantize_for_pool(pool, j.w, &x[..n * cols], n)
                .map_err(err)?;
            matmul_packed(pool, std::slice::from_mut(j), pa).map_err(err)?;
        }
        return Ok(());
    }
    let mut mj = jobs.map(|(w, out)| hologram_kernels::MatmulJob {
        w: w.bytes(f),
        wt: w.ttype,
        rows: w.rows,
        out: &mut out[..n * w.rows],
    });
    hologram_kernels::matmul_multi(pool, &mut mj, cols, &x[..n * cols], n, q)
        .map_err(|e| EngineError::Internal(format!("{}: {e}", names.join("+"))))
}

fn rms_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], n: usize) {
    let e = w.len();
    for r in 0..n {
        ops::rms_norm(&x[r * e..(r + 1) * e], w, eps, &mut out[r * e..(r + 1) * e]);
    }
}

impl DecoderModel {
    /// Run `rows` through the model. Every row's position must already be reserved in `kv`
    /// (`KvPool::seq_append`) and earlier positions of its sequence computed.
    pub fn forward(
        &self,
        f: &GgufFile,
        kv: &mut KvPool,
        s: &mut Scratch,
        pool: &Pool,
        rows: &[Row],
        out: Output<'_>,
    ) -> Result<()> {
        let c = &self.cfg;
        let n = rows.len();
        if n == 0 {
            return Ok(());
        }
        if n > s.n_batch {
            return Err(EngineError::InvalidArgument(format!(
                "batch of {n} rows exceeds n_batch {}",
                s.n_batch
            )));
        }
        let e = c.n_embd;
        let (hd, hdv, nh, nkv) = (c.head_dim, c.head_dim_v, c.n_head, c.n_head_kv);
        let rd = c.rope_dims;

        // Embeddings.
        for (r, row) in rows.iter().enumerate() {
            if row.token as usize >= c.n_vocab {
                return Err(EngineError::InvalidArgument(format!(
                    "token id {} is out of range (n_vocab {})",
                    row.token, c.n_vocab
                )));
            }
            let xr = &mut s.x[r * e..(r + 1) * e];
            self.token_embd.dequantize_row(f, row.token as usize, xr)?;
            if self.embd_scale != 1.0 {
                xr.iter_mut().for_each(|v| *v *= self.embd_scale);
            }
        }
        // RoPE tables, shared by all layers and heads.
        for (r, row) in rows.iter().enumerate() {
            ops::rope_cos_sin(
                row.pos,
                rd,
                c.rope_base,
                c.rope_freq_scale,
                &mut s.rope[r * rd..(r + 1) * rd],
            );
            if c.swa_period > 0 {
                ops::rope_cos_sin(
                    row.pos,
                    rd,
                    c.rope_base_swa,
                    1.0,
                    &mut s.rope_swa[r * rd..(r + 1) * rd],
                );
            }
        }

        for (il, l) in self.layers.iter().enumerate() {
            let swa = c.is_swa_layer(il);
            // --- attention ---
            rms_rows(&s.x, &l.attn_norm, c.norm_eps, &mut s.xn, n);
            // q, k and v share their input: one activation quantization, one parallel region.
            mm_multi(
                pool,
                f,
                [
                    (&l.wq, &mut s.q[..]),
                    (&l.wk, &mut s.k[..]),
                    (&l.wv, &mut s.v[..]),
                ],
                &s.xn,
                n,
                &mut s.qbuf,
                &mut s.pacts,
            )?;
            let table = if swa { &s.rope_swa } else { &s.rope };
            for r in 0..n {
                let cs = &table[r * rd..(r + 1) * rd];
                for h in 0..nh {
                    let qh = &mut s.q[(r * nh + h) * hd..(r * nh + h + 1) * hd];
                    if let Some(w) = &l.q_norm {
                        ops::rms_norm_inplace(qh, w, c.norm_eps);
                    }
                    ops::rope_apply(qh, cs, c.rope_kind);
                }
                for h in 0..nkv {
                    let kh = &mut s.k[(r * nkv + h) * hd..(r * nkv + h + 1) * hd];
                    if let Some(w) = &l.k_norm {
                        ops::rms_norm_inplace(kh, w, c.norm_eps);
                    }
                    ops::rope_apply(kh, cs, c.rope_kind);
                }
                let row = rows[r];
                kv.write(
                    il,
                    row.seq,
                    row.pos,
                    &s.k[r * nkv * hd..(r + 1) * nkv * hd],
                    &s.v[r * nkv * hdv..(r + 1) * nkv * hdv],
                );
            }
            let window = if swa { c.sliding_window } else { None };
            attention(
                c,
                kv,
                il,
                rows,
                &s.q,
                &mut s.att[..n * nh * hdv],
                window,
                pool,
            );
            mm(
                pool,
                f,
                &l.wo,
                &s.att,
                n,
                &mut s.tmp,
                &mut s.qbuf,
                &mut s.pacts,
            )?;
            if let Some(w) = &l.post_attn_norm {
                for r in 0..n {
                    ops::rms_norm_inplace(&mut s.tmp[r * e..(r + 1) * e], w, c.norm_eps);
                }
            }
            for (xv, tv) in s.x[..n * e].iter_mut().zip(&s.tmp[..n * e]) {
                *xv += tv;
            }

            // --- feed-forward ---
            rms_rows(&s.x, &l.ffn_norm, c.norm_eps, &mut s.xn, n);
            mm_multi(
                pool,
                f,
                [(&l.w_gate, &mut s.gate[..]), (&l.w_up, &mut s.up[..])],
                &s.xn,
                n,
                &mut s.qbuf,
                &mut s.pacts,
            )?;
            let nf = n * c.n_ff;
            activate(pool, self.activation, &mut s.gate[..nf], &s.up[..nf]);
            mm(
                pool,
                f,
                &l.w_down,
                &s.gate,
                n,
                &mut s.tmp,
                &mut s.qbuf,
                &mut s.pacts,
            )?;
            if let Some(w) = &l.post_ffn_norm {
                for r in 0..n {
                    ops::rms_norm_inplace(&mut s.tmp[r * e..(r + 1) * e], w, c.norm_eps);
                }
            }
            for (xv, tv) in s.x[..n * e].iter_mut().zip(&s.tmp[..n * e]) {
                *xv += tv;
            }
        }

        match out {
            Output::None => Ok(()),
            Output::Hidden(h) => {
                if h.len() != n * e {
                    return Err(EngineError::InvalidArgument(
                        "hidden output buffer has the wrong size".into(),
                    ));
                }
                rms_rows(&s.x, &self.output_norm, c.norm_eps, h, n);
                Ok(())
            }
            Output::Logits { rows: want, out } => {
                let m = want.len();
                if out.len() != m * c.n_vocab {
                    return Err(EngineError::InvalidArgument(
                        "logits buffer has the wrong size".into(),
                    ));
                }
                // Only the rows whose logits are wanted go through the output matrix.
                for (j, &r) in want.iter().enumerate() {
                    if r >= n {
                        return Err(EngineError::InvalidArgument(format!(
                            "logits row {r} out of batch"
                        )));
                    }
                    ops::rms_norm(
                        &s.x[r * e..(r + 1) * e],
                        &self.output_norm,
                        c.norm_eps,
                        &mut s.xn[j * e..(j + 1) * e],
                    );
                }
                mm(
                    pool,
                    f,
                    &self.output,
                    &s.xn,
                    m,
                    out,
                    &mut s.qbuf,
                    &mut s.pacts,
                )
            }
        }
    }
}
