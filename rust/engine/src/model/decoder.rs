//! The decoder-only transformer forward pass every architecture runs.
//!
//! One pass runs a batch of rows, each a `(sequence, position, token)`: a prompt prefill is many
//! positions of one sequence, a batched decode step is one position of many sequences; both go
//! through the same code. Matrix products over the batch are quantized matmuls (weights read
//! once per batch); attention reads each row's own sequence from the KV block pool.
//!
//! The model is data: per-architecture differences (norm kinds, biases, fused tensors, q/k
//! norms, post-norms, soft-capping, sliding windows, RoPE variants, parallel attention + FFN)
//! are chosen at load by the architecture's own file (`llama.rs`, `qwen2.rs`, `qwen3.rs`,
//! `phi2.rs`, `phi3.rs`, `gemma2.rs`, `gemma3.rs`) out of the blocks in `blocks.rs`. This file
//! never asks which architecture it runs.

use crate::error::{EngineError, Result};
use crate::gguf::keys;
use crate::gguf::GgufFile;
use crate::kv::{KvPool, SeqId};
use crate::model::attention::attention;
use crate::model::blocks::{add_bias_rows, Activation, Attention, Ffn, Layer, Norm, Residual};
use crate::model::config::ModelConfig;
use crate::model::rope::Rope;
use crate::model::weights::{Linear, Tensors};
use hologram_kernels::ops;
use hologram_kernels::packed::{matmul_packed, PackedActs, PackedJob};
use hologram_kernels::Pool;
use rayon::prelude::*;

/// At most this many distinct RoPE tables per model (global and sliding-window layers).
pub const MAX_ROPES: usize = 2;

#[derive(Debug)]
pub struct DecoderModel {
    pub cfg: ModelConfig,
    pub token_embd: Linear, // (n_vocab, n_embd)
    /// Multiplier of the token embeddings (gemma: sqrt(n_embd)).
    pub embd_scale: f32,
    pub layers: Vec<Layer>,
    pub residual: Residual,
    /// The RoPE tables the layers use (`Attention::rope` indexes this).
    pub ropes: Vec<Rope>,
    pub output_norm: Norm,
    pub output: Linear, // (n_vocab, n_embd); token_embd when tied
    pub output_bias: Option<Vec<f32>>,
    /// `cap * tanh(logit / cap)` of the final logits (gemma2).
    pub final_softcap: Option<f32>,
    pub tied_output: bool,
}

/// What an architecture file hands to [`DecoderModel::assemble`].
pub struct Parts {
    pub embd_scale: f32,
    pub layers: Vec<Layer>,
    pub residual: Residual,
    pub ropes: Vec<Rope>,
    pub output_norm: Norm,
    pub output_bias: Option<Vec<f32>>,
    pub final_softcap: Option<f32>,
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
    /// Load the decoder `cfg` was read from ([`ModelConfig::from_gguf`]), for a context of
    /// `cfg.n_ctx_train` positions (see [`crate::model::load_decoder`]).
    pub fn load(f: &GgufFile, cfg: ModelConfig) -> Result<Self> {
        crate::model::load_decoder(
            f,
            cfg.n_vocab,
            &crate::model::LoadOptions {
                n_ctx: cfg.n_ctx_train,
            },
        )
    }

    /// Start loading the tensors of a model with configuration `c`: the number of `blk.N`
    /// tensor groups must agree with `block_count` (RELIABILITY G32).
    pub fn tensors<'f>(f: &'f GgufFile, c: &ModelConfig) -> Result<Tensors<'f>> {
        let max_blk = f
            .tensors()
            .iter()
            .filter_map(|t| keys::block_index(&t.name))
            .max();
        if max_blk.map_or(0, |m| m + 1) != c.n_layer {
            return Err(EngineError::invalid_model(format!(
                "{}.block_count is {} but the file has tensors for {} blocks",
                c.arch.name(),
                c.n_layer,
                max_blk.map_or(0, |m| m + 1)
            )));
        }
        Ok(Tensors::new(f))
    }

    /// The token embedding table and the output matrix (`output.weight`, else the embedding
    /// table, tied), as every architecture here loads them.
    pub fn embeddings(t: &mut Tensors<'_>, c: &ModelConfig) -> Result<(Linear, Linear, bool)> {
        let (e, v) = (c.n_embd, c.n_vocab);
        let token_embd = t.matrix(keys::TOKEN_EMBD, e, v)?;
        Ok(match t.matrix_opt(keys::OUTPUT, e, v)? {
            Some(o) => (token_embd, o, false),
            None => (token_embd.clone(), token_embd, true),
        })
    }

    /// Check the parts against the file and the configuration, repack the matrices for the
    /// packed kernel and build the model.
    pub fn assemble(
        t: Tensors<'_>,
        cfg: ModelConfig,
        (token_embd, mut output, tied_output): (Linear, Linear, bool),
        p: Parts,
    ) -> Result<Self> {
        let f = t.f;
        if p.layers.len() != cfg.n_layer {
            return Err(EngineError::Internal(format!(
                "{} layers built for block_count {}",
                p.layers.len(),
                cfg.n_layer
            )));
        }
        t.check_all_used(cfg.arch.name())?;
        if p.ropes.is_empty() || p.ropes.len() > MAX_ROPES {
            return Err(EngineError::Internal(format!(
                "{} RoPE tables (1 to {MAX_ROPES} supported)",
                p.ropes.len()
            )));
        }
        for l in &p.layers {
            let a = &l.attn;
            if a.rope >= p.ropes.len() || p.ropes[a.rope].dims != cfg.rope_dims {
                return Err(EngineError::Internal(
                    "layer RoPE table out of range".into(),
                ));
            }
            if (p.residual == Residual::Parallel) != l.ffn_norm.is_none() {
                return Err(EngineError::Internal(
                    "an FFN norm goes with sequential layers only".into(),
                ));
            }
            if a.window == Some(0) {
                return Err(EngineError::invalid_model("sliding window of 0 positions"));
            }
        }
        for cap in p
            .layers
            .iter()
            .filter_map(|l| l.attn.softcap)
            .chain(p.final_softcap)
        {
            if !(cap.is_finite() && cap > 0.0) {
                return Err(EngineError::invalid_model(format!(
                    "soft-capping value {cap} must be positive"
                )));
            }
        }
        // Repack the matrices for the packed kernel where it runs (see `Linear::pack`) and
        // release their mapped pages. A tied embedding table too: a Q8_0 one then serves its row
        // lookups from the packed copy; other formats read the rows' pages back from the file.
        let mut layers = p.layers;
        for l in &mut layers {
            for w in l.matrices_mut() {
                w.pack(f)?;
            }
        }
        output.pack(f)?;
        let mut token_embd = token_embd;
        if tied_output {
            // One packed table serves both the output projection and the row lookups.
            token_embd.packed.clone_from(&output.packed);
        }
        Ok(DecoderModel {
            cfg,
            token_embd,
            embd_scale: p.embd_scale,
            layers,
            residual: p.residual,
            ropes: p.ropes,
            output_norm: p.output_norm,
            output,
            output_bias: p.output_bias,
            final_softcap: p.final_softcap,
            tied_output,
        })
    }

    /// Bytes of weights read per decoded token (all matrices, the output once).
    pub fn weight_bytes(&self) -> usize {
        let mut b = self.output.info.nbytes as usize;
        for l in &self.layers {
            for w in l.matrices() {
                b += w.info.nbytes as usize;
            }
        }
        b
    }
}

/// Activation buffers for up to `n_batch` rows, allocated once.
pub struct Scratch {
    n_batch: usize,
    x: Vec<f32>,       // (n_batch, n_embd) residual stream
    xn: Vec<f32>,      // (n_batch, n_embd) normalised input of a sub-block
    q: Vec<f32>,       // (n_batch, n_head * head_dim)
    k: Vec<f32>,       // (n_batch, n_head_kv * head_dim)
    v: Vec<f32>,       // (n_batch, n_head_kv * head_dim_v)
    att: Vec<f32>,     // (n_batch, n_head * head_dim_v)
    tmp: Vec<f32>,     // (n_batch, n_embd) sub-block output
    tmp2: Vec<f32>,    // (n_batch, n_embd) FFN output of parallel layers
    gate: Vec<f32>,    // (n_batch, n_ff)
    up: Vec<f32>,      // (n_batch, n_ff)
    rope: Vec<f32>,    // (MAX_ROPES, n_batch, rope_dims) interleaved cos/sin
    qbuf: Vec<u8>,     // quantized activations for matmul
    pacts: PackedActs, // quantized activations for packed matmuls
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
            tmp2: vec![0.0; n * cfg.n_embd],
            gate: vec![0.0; n * cfg.n_ff],
            up: vec![0.0; n * cfg.n_ff],
            rope: vec![0.0; MAX_ROPES * n * cfg.rope_dims],
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
    if jobs.iter().any(|(w, _)| w.packed.is_some()) {
        // Mixed formats: the packed matrices' mapped pages were released at load, so each
        // matrix runs its own path (no shared call, so nothing is allocated; this is rare).
        for (w, out) in jobs {
            mm(pool, f, w, x, n, out, q, pa)?;
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

/// `x = act(x)` of an FFN without a gate, split over the pool like [`activate`].
fn activate_plain(pool: &Pool, act: Activation, x: &mut [f32]) {
    const CHUNK: usize = 8192;
    let f = |c: &mut [f32]| match act {
        Activation::Silu => c.iter_mut().for_each(|v| *v /= 1.0 + (-*v).exp()),
        Activation::GeluTanh => c.iter_mut().for_each(|v| *v = ops::gelu_tanh(*v)),
    };
    if x.len() <= CHUNK || pool.n_threads() == 1 {
        f(x);
        return;
    }
    pool.install(|| x.par_chunks_mut(CHUNK).for_each(f));
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
        // The whole pass runs on a pool worker: every parallel operation inside it is then a
        // fork inside the pool (the idle worker, still awake from the last one, steals it at
        // once) instead of a hand-off from the engine thread and back, with a sleep and a
        // wake-up on each side, for each of the ~8 operations of each layer. For a 135M model
        // decoding one token, that hand-off was about half of the step.
        // Small steps run with every worker or on this thread alone, whichever the pool's
        // tuner measures as faster (with the other vCPU busy, one thread can win).
        pool.run_tuned(rows.len(), || {
            if pool.n_threads() > 1 {
                pool.install(|| self.forward_in_pool(f, kv, s, pool, rows, out))
            } else {
                self.forward_in_pool(f, kv, s, pool, rows, out)
            }
        })
    }

    fn forward_in_pool(
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
        // RoPE tables, shared by all layers and heads: table t of row r at (t * n + r) * rd.
        for (t, rope) in self.ropes.iter().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                let at = (t * n + r) * rd;
                rope.table(row.pos, &mut s.rope[at..at + rd]);
            }
        }

        for (il, l) in self.layers.iter().enumerate() {
            l.attn_norm.rows(&s.x, &mut s.xn, n);
            self.attention_block(f, kv, s, pool, rows, il, &l.attn)?;
            if let Some(norm) = &l.post_attn_norm {
                norm.rows_inplace(&mut s.tmp, n);
            }
            match self.residual {
                Residual::Sequential => {
                    for (xv, tv) in s.x[..n * e].iter_mut().zip(&s.tmp[..n * e]) {
                        *xv += tv;
                    }
                    if let Some(norm) = &l.ffn_norm {
                        norm.rows(&s.x, &mut s.xn, n);
                    }
                    ffn_block(f, s, pool, n, &l.ffn, false)?;
                    if let Some(norm) = &l.post_ffn_norm {
                        norm.rows_inplace(&mut s.tmp, n);
                    }
                    for (xv, tv) in s.x[..n * e].iter_mut().zip(&s.tmp[..n * e]) {
                        *xv += tv;
                    }
                }
                Residual::Parallel => {
                    // The FFN reads the same normalised input as the attention.
                    ffn_block(f, s, pool, n, &l.ffn, true)?;
                    if let Some(norm) = &l.post_ffn_norm {
                        norm.rows_inplace(&mut s.tmp2, n);
                    }
                    // llama.cpp (phi2): (attn + ffn) + x.
                    for ((xv, a), b) in s.x[..n * e]
                        .iter_mut()
                        .zip(&s.tmp[..n * e])
                        .zip(&s.tmp2[..n * e])
                    {
                        *xv += a + b;
                    }
                }
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
                self.output_norm.rows(&s.x, h, n);
                Ok(())
            }
            Output::Logits { rows: want, out } => {
                let m = want.len();
                let nv = c.n_vocab;
                if out.len() != m * nv {
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
                    self.output_norm
                        .row(&s.x[r * e..(r + 1) * e], &mut s.xn[j * e..(j + 1) * e]);
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
                )?;
                add_bias_rows(out, self.output_bias.as_deref(), m);
                if let Some(cap) = self.final_softcap {
                    let inv = 1.0 / cap;
                    out.iter_mut().for_each(|v| *v = (*v * inv).tanh() * cap);
                }
                Ok(())
            }
        }
    }

    /// Self-attention of layer `il` over `s.xn` (the normalised input): q/k/v projections
    /// (+ biases), per-head q/k norms, RoPE, the KV cache write, attention, the output
    /// projection (+ bias) into `s.tmp`.
    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        f: &GgufFile,
        kv: &mut KvPool,
        s: &mut Scratch,
        pool: &Pool,
        rows: &[Row],
        il: usize,
        a: &Attention,
    ) -> Result<()> {
        let c = &self.cfg;
        let n = rows.len();
        let (hd, hdv, nh, nkv) = (c.head_dim, c.head_dim_v, c.n_head, c.n_head_kv);
        let rd = c.rope_dims;
        // q, k and v share their input: one activation quantization, one parallel region.
        mm_multi(
            pool,
            f,
            [
                (&a.wq, &mut s.q[..]),
                (&a.wk, &mut s.k[..]),
                (&a.wv, &mut s.v[..]),
            ],
            &s.xn,
            n,
            &mut s.qbuf,
            &mut s.pacts,
        )?;
        add_bias_rows(&mut s.q, a.bq.as_deref(), n);
        add_bias_rows(&mut s.k, a.bk.as_deref(), n);
        add_bias_rows(&mut s.v, a.bv.as_deref(), n);
        let kind = self.ropes[a.rope].kind;
        let table = &s.rope[a.rope * n * rd..(a.rope + 1) * n * rd];
        for r in 0..n {
            let cs = &table[r * rd..(r + 1) * rd];
            for h in 0..nh {
                let qh = &mut s.q[(r * nh + h) * hd..(r * nh + h + 1) * hd];
                if let Some(w) = &a.q_norm {
                    ops::rms_norm_inplace(qh, w, c.norm_eps);
                }
                ops::rope_apply(qh, cs, kind);
            }
            for h in 0..nkv {
                let kh = &mut s.k[(r * nkv + h) * hd..(r * nkv + h + 1) * hd];
                if let Some(w) = &a.k_norm {
                    ops::rms_norm_inplace(kh, w, c.norm_eps);
                }
                ops::rope_apply(kh, cs, kind);
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
        attention(c, a, kv, il, rows, &s.q, &mut s.att[..n * nh * hdv], pool);
        mm(
            pool,
            f,
            &a.wo,
            &s.att,
            n,
            &mut s.tmp,
            &mut s.qbuf,
            &mut s.pacts,
        )?;
        add_bias_rows(&mut s.tmp, a.bo.as_deref(), n);
        Ok(())
    }
}

/// The FFN of `s.xn` into `s.tmp` (`s.tmp2` when `second`: parallel layers keep the
/// attention's output in `s.tmp`).
fn ffn_block(
    f: &GgufFile,
    s: &mut Scratch,
    pool: &Pool,
    n: usize,
    ffn: &Ffn,
    second: bool,
) -> Result<()> {
    let nf = n * ffn.up.rows;
    match &ffn.gate {
        Some(gate) => {
            mm_multi(
                pool,
                f,
                [(gate, &mut s.gate[..]), (&ffn.up, &mut s.up[..])],
                &s.xn,
                n,
                &mut s.qbuf,
                &mut s.pacts,
            )?;
            add_bias_rows(&mut s.gate, ffn.gate_b.as_deref(), n);
            add_bias_rows(&mut s.up, ffn.up_b.as_deref(), n);
            activate(pool, ffn.act, &mut s.gate[..nf], &s.up[..nf]);
        }
        None => {
            mm(
                pool,
                f,
                &ffn.up,
                &s.xn,
                n,
                &mut s.gate,
                &mut s.qbuf,
                &mut s.pacts,
            )?;
            add_bias_rows(&mut s.gate, ffn.up_b.as_deref(), n);
            activate_plain(pool, ffn.act, &mut s.gate[..nf]);
        }
    }
    let out = if second { &mut s.tmp2 } else { &mut s.tmp };
    mm(
        pool,
        f,
        &ffn.down,
        &s.gate,
        n,
        out,
        &mut s.qbuf,
        &mut s.pacts,
    )?;
    add_bias_rows(out, ffn.down_b.as_deref(), n);
    Ok(())
}
