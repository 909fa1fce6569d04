//! The engine facade: load a GGUF model, tokenize, run sequences through the model over the KV
//! block pool, and generate. This is the crate's public surface; the Python bindings and any
//! other front end call only this.

use std::path::Path;
use std::sync::Arc;

use crate::constraint::{Constraint, Grammars};
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use crate::kv::{KvPool, SeqId};
use crate::model::bert::{l2_normalize, pool_states, Pooling};
use crate::model::{DecoderModel, ModelConfig, Output, Row, Scratch};
use crate::sample::{log_softmax_top, Sampler, SamplingParams, StopMatcher};
use crate::tokenizer::{model_defaults, StreamDecoder, Tokenizer, Vocab};
use hologram_kernels::Pool;

/// Options fixed at load.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Maximum tokens of one sequence (prompt + generated).
    pub n_ctx: usize,
    /// Compute threads; None = all available cores.
    pub n_threads: Option<usize>,
    /// Maximum rows of one forward pass (prompt chunks larger than this are split).
    pub n_batch: usize,
    /// Sequences that can be alive at once.
    pub n_seq_max: usize,
    /// Token slots of the KV block pool, shared by all sequences; None = the default,
    /// [`default_kv_tokens`]. At least one whole context is always allocated.
    pub kv_tokens: Option<usize>,
}

/// The default KV pool size: room for `min(n_seq_max, 4)` whole contexts. Sequences are paged,
/// so many short ones share what one long one would use; when the pool runs out the processor
/// preempts (and later recomputes) the newest sequence rather than fail a request.
pub fn default_kv_tokens(n_ctx: usize, n_seq_max: usize) -> usize {
    n_ctx.saturating_mul(n_seq_max.clamp(1, 4))
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            n_ctx: 2048,
            n_threads: None,
            n_batch: 512,
            n_seq_max: 16,
            kv_tokens: None,
        }
    }
}

pub struct Engine {
    path: String,
    file: GgufFile,
    model: DecoderModel,
    tokenizer: Arc<Tokenizer>,
    kv: KvPool,
    scratch: Scratch,
    pool: Pool,
    opts: EngineOptions,
    chat_template: Option<String>,
    /// The grammar compiler for structured output (its token environment is built on first
    /// use), shared with the processor's front end.
    grammars: Arc<Grammars>,
    /// Row list of one forward pass, reused (capacity n_batch): the decode loop allocates nothing.
    rows: Vec<Row>,
}

fn opt_id(f: &GgufFile, k: &str) -> Result<Option<u32>> {
    match f.get_u64(k)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| EngineError::invalid_model(format!("{k} = {v} is not a valid token id"))),
    }
}

/// The tokenizer description stored in a GGUF file (`tokenizer.ggml.*`).
pub fn vocab_from_gguf(f: &GgufFile) -> Result<Vocab> {
    let model = f
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| EngineError::invalid_model("missing required key tokenizer.ggml.model"))?
        .to_string();
    let tokens = f
        .get_str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| EngineError::invalid_model("missing required key tokenizer.ggml.tokens"))?
        .to_vec();
    // A token is a short piece of text; a huge one is a malformed (or hostile) vocabulary
    // (RELIABILITY G37, llama.cpp CVE-2025-49847).
    const MAX_TOKEN_BYTES: usize = 64 * 1024;
    if let Some((i, t)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| t.len() > MAX_TOKEN_BYTES)
    {
        return Err(EngineError::invalid_model(format!(
            "tokenizer.ggml.tokens[{i}] is {} bytes long (limit {MAX_TOKEN_BYTES})",
            t.len()
        )));
    }
    let scores = f
        .get_f32_array("tokenizer.ggml.scores")?
        .map(|s| s.to_vec())
        .unwrap_or_default();
    let token_types = f
        .get_i32_array("tokenizer.ggml.token_type")?
        .map(|s| s.to_vec())
        .unwrap_or_default();
    // Byte-fallback tokens must spell a byte: "<0xHH>" (RELIABILITY G37).
    const TOKEN_TYPE_BYTE: i32 = 6;
    for (i, (&ty, text)) in token_types.iter().zip(&tokens).enumerate() {
        let ok = text.len() == 6
            && text.starts_with("<0x")
            && text.ends_with('>')
            && text.as_bytes()[3..5].iter().all(u8::is_ascii_hexdigit);
        if ty == TOKEN_TYPE_BYTE && !ok {
            return Err(EngineError::invalid_model(format!(
                "tokenizer.ggml.tokens[{i}] = {:?} is typed BYTE but is not <0xHH>",
                text.chars().take(32).collect::<String>()
            )));
        }
    }
    let merges = f
        .get_str_array("tokenizer.ggml.merges")?
        .map(|s| s.to_vec())
        .unwrap_or_default();
    let pre = f.get_str("tokenizer.ggml.pre")?.map(str::to_string);
    // llama.cpp's per-model defaults for keys the file leaves out; ids outside the
    // vocabulary are dropped as llama.cpp disables them.
    let d = model_defaults(&model, pre.as_deref());
    let n = tokens.len();
    let id = |k: &str, default: Option<u32>| -> Result<Option<u32>> {
        Ok(opt_id(f, k)?.or(default.filter(|&i| (i as usize) < n)))
    };
    Ok(Vocab {
        bos: id("tokenizer.ggml.bos_token_id", d.bos)?,
        eos: id("tokenizer.ggml.eos_token_id", d.eos)?,
        eot: opt_id(f, "tokenizer.ggml.eot_token_id")?,
        eom: opt_id(f, "tokenizer.ggml.eom_token_id")?,
        unk: id("tokenizer.ggml.unknown_token_id", d.unk)?,
        pad: id("tokenizer.ggml.padding_token_id", d.pad)?,
        sep: id("tokenizer.ggml.seperator_token_id", d.sep)?,
        cls: opt_id(f, "tokenizer.ggml.cls_token_id")?,
        mask: id("tokenizer.ggml.mask_token_id", d.mask)?,
        add_bos: f
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(d.add_bos),
        add_eos: f
            .get_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(d.add_eos),
        add_space_prefix: f
            .get_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(d.add_space_prefix),
        // llama.cpp always lower-cases and strips accents for WordPiece; the converter records
        // the model's own setting under hologram.* keys.
        lowercase: f
            .get_bool("hologram.tokenizer.do_lower_case")?
            .unwrap_or(true),
        strip_accents: f
            .get_bool("hologram.tokenizer.strip_accents")?
            .unwrap_or(true),
        pre,
        tokens,
        token_types,
        scores,
        merges,
        model,
    })
}

impl Engine {
    pub fn load(path: &Path, opts: EngineOptions) -> Result<Self> {
        let file = GgufFile::open(path)?;
        Self::from_file(path, file, opts)
    }

    /// Load from an already opened file (see [`crate::encoder::load`], which picks the kind).
    pub(crate) fn from_file(path: &Path, file: GgufFile, opts: EngineOptions) -> Result<Self> {
        if opts.n_ctx == 0 || opts.n_batch == 0 || opts.n_seq_max == 0 {
            return Err(EngineError::InvalidArgument(
                "n_ctx, n_batch and n_seq_max must be positive".into(),
            ));
        }
        if opts.n_threads == Some(0) {
            return Err(EngineError::InvalidArgument(
                "n_threads must be positive".into(),
            ));
        }
        let vocab = vocab_from_gguf(&file)?;
        let tokenizer = Arc::new(Tokenizer::new(vocab)?);
        let model = crate::model::load_decoder(
            &file,
            tokenizer.n_vocab(),
            &crate::model::LoadOptions { n_ctx: opts.n_ctx },
        )?;
        let c = &model.cfg;
        let kv = KvPool::new(
            c.n_layer,
            c.n_head_kv,
            c.head_dim,
            c.head_dim_v,
            opts.n_ctx,
            // One slot more than the running limit, for whole-sequence jobs (logits, hidden
            // states) run between the processor's steps.
            opts.n_seq_max + 1,
            opts.kv_tokens
                .unwrap_or_else(|| default_kv_tokens(opts.n_ctx, opts.n_seq_max)),
        )?;
        let n_batch = opts.n_batch.min(opts.n_ctx);
        let scratch = Scratch::new(c, n_batch);
        let n_threads = opts
            .n_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool = Pool::new(n_threads)
            .map_err(|e| EngineError::InvalidArgument(format!("thread pool: {e}")))?;
        let chat_template = file.get_str("tokenizer.chat_template")?.map(str::to_string);
        let grammars = Arc::new(Grammars::new(tokenizer.clone()));
        Ok(Engine {
            path: path.display().to_string(),
            file,
            model,
            tokenizer,
            kv,
            scratch,
            pool,
            opts: EngineOptions {
                n_batch,
                n_threads: Some(n_threads),
                ..opts
            },
            chat_template,
            grammars,
            rows: Vec::with_capacity(n_batch),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn config(&self) -> &ModelConfig {
        &self.model.cfg
    }
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }
    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    /// The model's grammar compiler (structured output).
    pub fn grammars(&self) -> &Arc<Grammars> {
        &self.grammars
    }
    pub fn kv(&self) -> &KvPool {
        &self.kv
    }
    pub fn weight_bytes(&self) -> usize {
        self.model.weight_bytes()
    }

    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.tokenizer.encode(text, add_special, parse_special)
    }

    pub fn check_tokens(&self, ids: &[u32]) -> Result<()> {
        let nv = self.model.cfg.n_vocab;
        match ids.iter().find(|&&t| t as usize >= nv) {
            Some(t) => Err(EngineError::InvalidArgument(format!(
                "token id {t} is out of range (n_vocab {nv})"
            ))),
            None => Ok(()),
        }
    }

    pub fn seq_new(&mut self) -> Result<SeqId> {
        self.kv.seq_new()
    }
    pub fn seq_free(&mut self, id: SeqId) {
        self.kv.seq_free(id)
    }
    pub fn seq_len(&self, id: SeqId) -> Result<usize> {
        self.kv.seq_len(id)
    }

    /// Append `tokens` to sequence `seq` and run them through the model, in chunks of n_batch.
    /// `logits` receives the logits of the last token (len n_vocab) when given.
    pub fn eval(&mut self, seq: SeqId, tokens: &[u32], logits: Option<&mut [f32]>) -> Result<()> {
        self.check_tokens(tokens)?;
        let start = self.kv.seq_append(seq, tokens.len())?;
        let r = self.eval_appended(seq, start, tokens, logits);
        if r.is_err() {
            // Leave the sequence as it was before the call.
            let _ = self.kv.seq_truncate(seq, start);
        }
        r
    }

    fn eval_appended(
        &mut self,
        seq: SeqId,
        start: usize,
        tokens: &[u32],
        mut logits: Option<&mut [f32]>,
    ) -> Result<()> {
        let nb = self.scratch.n_batch();
        let n_chunks = tokens.len().div_ceil(nb);
        let mut rows = std::mem::take(&mut self.rows);
        let mut result = Ok(());
        for (ci, chunk) in tokens.chunks(nb).enumerate() {
            fill_rows(&mut rows, seq, start + ci * nb, chunk);
            let last = [rows.len() - 1];
            let out = match (ci + 1 == n_chunks, logits.as_deref_mut()) {
                (true, Some(l)) => Output::Logits {
                    rows: &last,
                    out: l,
                },
                _ => Output::None,
            };
            result = self.model.forward(
                &self.file,
                &mut self.kv,
                &mut self.scratch,
                &self.pool,
                &rows,
                out,
            );
            if result.is_err() {
                break;
            }
        }
        self.rows = rows;
        result
    }

    /// Logits for every position of `ids` evaluated as a fresh sequence: `(len, n_vocab)`
    /// written into `out`.
    pub fn logits_all(&mut self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        self.every_position(ids, out, false)
    }

    /// Final hidden states (after the output norm) for every position of `ids`:
    /// `(len, n_embd)` into `out`.
    pub fn hidden_all(&mut self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        self.every_position(ids, out, true)
    }

    /// Run `ids` as a fresh sequence and write one row per position into `out`: the final
    /// hidden state (`hidden`) or the logits.
    fn every_position(&mut self, ids: &[u32], out: &mut [f32], hidden: bool) -> Result<()> {
        let width = if hidden {
            self.model.cfg.n_embd
        } else {
            self.model.cfg.n_vocab
        };
        if out.len() != ids.len() * width {
            return Err(EngineError::InvalidArgument(
                "output buffer has the wrong size".into(),
            ));
        }
        self.with_temp_seq(ids, |eng, seq, start| {
            let nb = eng.scratch.n_batch();
            let all: Vec<usize> = (0..nb).collect();
            let mut rows = Vec::with_capacity(nb);
            for (ci, chunk) in ids.chunks(nb).enumerate() {
                fill_rows(&mut rows, seq, start + ci * nb, chunk);
                let o = &mut out[ci * nb * width..(ci * nb + rows.len()) * width];
                let output = if hidden {
                    Output::Hidden(o)
                } else {
                    Output::Logits {
                        rows: &all[..rows.len()],
                        out: o,
                    }
                };
                eng.model.forward(
                    &eng.file,
                    &mut eng.kv,
                    &mut eng.scratch,
                    &eng.pool,
                    &rows,
                    output,
                )?;
            }
            Ok(())
        })
    }

    /// Log-probability of each token of `ids` given the ones before it, with the `top` most
    /// likely alternatives at that position: entry `i - 1` is for `ids[i]` (the first token
    /// has none). Computed chunk by chunk in Rust: memory stays at a few rows of logits, never
    /// a prompt-length x vocabulary array.
    pub fn prompt_logprobs(&mut self, ids: &[u32], top: usize) -> Result<Vec<PositionLogprobs>> {
        const ROWS: usize = 32;
        let nv = self.model.cfg.n_vocab;
        let mut out = Vec::with_capacity(ids.len().saturating_sub(1));
        self.with_temp_seq(ids, |eng, seq, start| {
            let nb = eng.scratch.n_batch().min(ROWS);
            let all: Vec<usize> = (0..nb).collect();
            let mut logits = vec![0f32; nb * nv];
            let mut rows = Vec::with_capacity(nb);
            let mut alts = Vec::with_capacity(top);
            for (ci, chunk) in ids.chunks(nb).enumerate() {
                fill_rows(&mut rows, seq, start + ci * nb, chunk);
                let n = rows.len();
                eng.forward_rows(&rows, &all[..n], &mut logits[..n * nv])?;
                for j in 0..n {
                    // Row j predicts the token after it.
                    let Some(&next) = ids.get(ci * nb + j + 1) else {
                        break;
                    };
                    let row = &logits[j * nv..(j + 1) * nv];
                    let lse = log_softmax_top(row, top, &mut alts);
                    out.push((row[next as usize] - lse, alts.clone()));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Embeddings from a decoder's final hidden states, input by input: pooled vectors
    /// `(inputs.len(), n_embd)`, or with `Pooling::None` every input's per-token states
    /// concatenated; L2-normalised per vector if `normalize`.
    pub fn vectors(
        &mut self,
        inputs: &[Vec<u32>],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<f32>> {
        let e = self.model.cfg.n_embd;
        let mut out = Vec::new();
        let mut hidden = Vec::new();
        for ids in inputs {
            hidden.clear();
            hidden.resize(ids.len() * e, 0.0);
            self.hidden_all(ids, &mut hidden)?;
            if pooling == Pooling::None {
                if normalize {
                    hidden.chunks_mut(e).for_each(l2_normalize);
                }
                out.extend_from_slice(&hidden);
            } else {
                let at = out.len();
                out.resize(at + e, 0.0);
                pool_states(&hidden, pooling, normalize, &mut out[at..])?;
            }
        }
        Ok(out)
    }

    fn with_temp_seq<F>(&mut self, ids: &[u32], f: F) -> Result<()>
    where
        F: FnOnce(&mut Engine, SeqId, usize) -> Result<()>,
    {
        if ids.is_empty() {
            return Ok(());
        }
        self.check_tokens(ids)?;
        let seq = self.kv.seq_new()?;
        let r = self
            .kv
            .seq_append(seq, ids.len())
            .and_then(|start| f(self, seq, start));
        self.kv.seq_free(seq);
        r
    }
}

/// `rows` := one row per token of `tokens`, at positions `first..` of `seq`.
fn fill_rows(rows: &mut Vec<Row>, seq: SeqId, first: usize, tokens: &[u32]) {
    rows.clear();
    rows.extend(tokens.iter().enumerate().map(|(i, &token)| Row {
        seq,
        pos: first + i,
        token,
    }));
}

/// One prompt position's logprob and its top `(token, logprob)` alternatives.
pub type PositionLogprobs = (f32, Vec<(u32, f32)>);

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// max_tokens reached, or the context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Top alternatives to report with each token (None = no logprobs).
    pub logprobs: Option<usize>,
    pub ignore_eos: bool,
    /// Structured output: an llguidance grammar (see [`crate::constraint`]) the output must
    /// match. The generation ends ("stop") when the grammar is complete; an end-of-generation
    /// token is allowed only where the grammar accepts (and then ends the generation even with
    /// `ignore_eos`).
    pub grammar: Option<String>,
}

/// One generated token.
#[derive(Clone, Debug)]
pub struct StepOut {
    pub token: u32,
    /// Text released by this step (UTF-8 complete, stop strings withheld).
    pub text: String,
    pub logprob: Option<f32>,
    pub top: Vec<(u32, f32)>,
    /// The end-of-generation step that only flushes held-back text: `token` is the
    /// end-of-generation token, which is not part of the output or of the token count.
    pub flush: bool,
}

/// The decoding state of one generation: sampler, stop strings, UTF-8 stream decoder and the
/// token history. It owns no KV memory: whoever runs the model (the [`crate::processor`], or
/// [`Engine::generate_alone`]) feeds it the logits of its last token with [`Generation::accept`].
pub struct Generation {
    prompt_len: usize,
    params: GenParams,
    sampler: Sampler,
    /// Prompt followed by the generated tokens.
    history: Vec<u32>,
    stop: StopMatcher,
    decoder: StreamDecoder,
    n_generated: usize,
    finish: Option<FinishReason>,
    n_ctx: usize,
    work: Vec<f32>,
    top: Vec<(u32, f32)>,
    /// The grammar state of a constrained generation.
    constraint: Option<Box<Constraint>>,
    /// Why the generation failed (a constraint that could not continue).
    error: Option<EngineError>,
}

impl Generation {
    /// Validate `prompt` and `params` for `engine` and prepare to generate. Fails if the prompt
    /// is empty, holds an id outside the vocabulary, or does not fit in the context.
    pub fn new(engine: &Engine, prompt: Vec<u32>, params: GenParams) -> Result<Self> {
        Self::with_limits(
            engine.opts.n_ctx,
            engine.model.cfg.n_vocab,
            prompt,
            params,
            Some(&engine.grammars),
        )
    }

    /// [`new`](Self::new) for a model with context `n_ctx` and vocabulary `nv`; a grammar in
    /// `params` is compiled with `grammars` (an error without one).
    pub fn with_limits(
        n_ctx: usize,
        nv: usize,
        prompt: Vec<u32>,
        params: GenParams,
        grammars: Option<&Grammars>,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(EngineError::InvalidArgument("the prompt is empty".into()));
        }
        if prompt.len() >= n_ctx {
            return Err(EngineError::ContextOverflow(format!(
                "the prompt has {} tokens; the context holds {n_ctx} (at least one must be left to generate)",
                prompt.len()
            )));
        }
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= nv) {
            return Err(EngineError::InvalidArgument(format!(
                "token id {t} is out of range (n_vocab {nv})"
            )));
        }
        params.sampling.validate(nv)?;
        let constraint = match (&params.grammar, grammars) {
            (None, _) => None,
            (Some(g), Some(c)) => Some(Box::new(c.compile(g)?)),
            (Some(_), None) => {
                return Err(EngineError::InvalidArgument(
                    "this model cannot take a grammar".into(),
                ))
            }
        };
        let finish = (params.max_tokens == 0).then_some(FinishReason::Length);
        let mut history = Vec::with_capacity(prompt.len() + params.max_tokens.min(n_ctx));
        history.extend_from_slice(&prompt);
        Ok(Generation {
            prompt_len: prompt.len(),
            sampler: Sampler::new(params.sampling.clone(), nv),
            stop: StopMatcher::new(params.stop.clone()),
            decoder: StreamDecoder::new(),
            params,
            history,
            n_generated: 0,
            finish,
            n_ctx,
            work: Vec::new(),
            top: Vec::new(),
            constraint,
            error: None,
        })
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_len
    }
    pub fn completion_tokens(&self) -> usize {
        self.n_generated
    }
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }
    /// The failure that ended the generation, if it failed (taken once).
    pub fn take_error(&mut self) -> Option<EngineError> {
        self.error.take()
    }
    /// A constrained generation whose next token mask is still to compute.
    pub fn needs_mask(&self) -> bool {
        self.finish.is_none() && self.constraint.as_ref().is_some_and(|c| c.needs_mask())
    }
    /// Compute the next token mask of a constrained generation now (the processor does it
    /// on another thread while the forward pass runs); otherwise [`accept`](Self::accept)
    /// does.
    pub fn prepare_mask(&mut self) {
        if let Some(c) = self.constraint.as_mut() {
            c.prepare();
        }
    }
    /// Time spent computing token masks and their number (zero without a grammar).
    pub fn mask_stats(&self) -> (std::time::Duration, u64) {
        self.constraint
            .as_ref()
            .map_or((std::time::Duration::ZERO, 0), |c| c.mask_stats())
    }
    pub fn params(&self) -> &GenParams {
        &self.params
    }
    /// Generated token ids so far.
    pub fn generated(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }
    /// Prompt plus generated tokens: what the model must have seen before the next sample.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    fn finish_with(&mut self, reason: FinishReason) -> String {
        self.finish = Some(reason);
        let mut tail = self.decoder.finish();
        let (emit, _) = self.stop.feed(&tail);
        tail = emit;
        tail.push_str(&self.stop.flush());
        tail
    }

    fn fail(&mut self, e: EngineError) {
        self.finish = Some(FinishReason::Stop);
        self.error = Some(e);
    }

    /// Take the logits of the last token of [`history`](Self::history) and produce the next
    /// token. Returns None when this step ends the generation with nothing to report; the step
    /// that finishes a generation carries any text held back until then. After a step,
    /// [`finish_reason`](Self::finish_reason) tells whether the generation is over; otherwise
    /// the sampled token is the last of the history and must be fed to the model next.
    ///
    /// With a grammar, the tokens it does not allow are removed before sampling (their logits
    /// set to `-inf`, before penalties, top-k/top-p/min-p and temperature); the reported
    /// logprobs stay those of the model's own distribution. A grammar failure ends the
    /// generation with an error ([`take_error`](Self::take_error)).
    pub fn accept(&mut self, logits: &[f32], tokenizer: &Tokenizer) -> Option<StepOut> {
        if self.finish.is_some() {
            return None;
        }
        // Logprobs come from the model's own distribution, before any sampling adjustment.
        let (lse, top) = match self.params.logprobs {
            Some(k) => {
                let lse = log_softmax_top(logits, k, &mut self.top);
                (Some(lse), self.top.clone())
            }
            None => (None, Vec::new()),
        };
        self.work.clear();
        self.work.extend_from_slice(logits);
        if let Some(c) = self.constraint.as_mut() {
            if let Err(e) = c.apply(&mut self.work) {
                self.fail(e);
                return None;
            }
        }
        let token = self.sampler.sample(&mut self.work, &self.history);
        let logprob = lse.map(|lse| logits[token as usize] - lse);

        // Under a grammar an end-of-generation token was allowed only where it accepts.
        if tokenizer.is_eog(token) && (!self.params.ignore_eos || self.constraint.is_some()) {
            let text = self.finish_with(FinishReason::Stop);
            if text.is_empty() {
                return None;
            }
            // Flush held-back text; the end-of-generation token itself is not part of the output.
            return Some(StepOut {
                token,
                text,
                logprob: None,
                top: Vec::new(),
                flush: true,
            });
        }
        self.n_generated += 1;
        self.history.push(token);
        let mut complete = false;
        if let Some(c) = self.constraint.as_mut() {
            if let Err(e) = c.commit(token) {
                self.fail(e);
                return None;
            }
            complete = c.is_stopped();
        }
        // Control tokens (e.g. <|im_start|>) produce no text, as in llama.cpp's server.
        let piece = self.decoder.push(tokenizer.piece(token, false));
        let (mut text, stopped) = self.stop.feed(&piece);
        if stopped {
            self.finish = Some(FinishReason::Stop);
        } else if complete {
            text.push_str(&self.finish_with(FinishReason::Stop));
        } else if self.n_generated >= self.params.max_tokens || self.history.len() >= self.n_ctx {
            text.push_str(&self.finish_with(FinishReason::Length));
        }
        Some(StepOut {
            token,
            text,
            logprob,
            top,
            flush: false,
        })
    }
}

impl Engine {
    /// Run `rows` through the model; the logits of the rows listed in `want` go to `out`
    /// (`(want.len(), n_vocab)`). The rows' positions must be reserved in the KV pool.
    pub(crate) fn forward_rows(
        &mut self,
        rows: &[Row],
        want: &[usize],
        out: &mut [f32],
    ) -> Result<()> {
        let output = if want.is_empty() {
            Output::None
        } else {
            Output::Logits { rows: want, out }
        };
        self.model.forward(
            &self.file,
            &mut self.kv,
            &mut self.scratch,
            &self.pool,
            rows,
            output,
        )
    }

    pub(crate) fn kv_mut(&mut self) -> &mut KvPool {
        &mut self.kv
    }

    /// Run one generation to its end on its own (no batching, no processor): the reference
    /// the batched processor must reproduce token for token.
    pub fn generate_alone(
        &mut self,
        prompt: Vec<u32>,
        params: GenParams,
    ) -> Result<(Generation, Vec<StepOut>)> {
        let mut gen = Generation::new(self, prompt, params)?;
        let mut steps = Vec::new();
        if gen.finish_reason().is_some() {
            return Ok((gen, steps));
        }
        let seq = self.seq_new()?;
        let mut logits = vec![0f32; self.model.cfg.n_vocab];
        let mut fed = 0;
        let r = (|| {
            while gen.finish_reason().is_none() {
                let feed = gen.history()[fed..].to_vec();
                self.eval(seq, &feed, Some(&mut logits))?;
                fed += feed.len();
                if let Some(s) = gen.accept(&logits, &self.tokenizer) {
                    steps.push(s);
                }
                if let Some(e) = gen.take_error() {
                    return Err(e);
                }
            }
            Ok(())
        })();
        self.seq_free(seq);
        r.map(|_| (gen, steps))
    }
}
