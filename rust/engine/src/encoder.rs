//! The encoder facade: embedding models (BERT family) that map a batch of token sequences to
//! vectors in one pass, with no KV cache and no generation. Immutable after load, so it is
//! shared between threads without a lock.

use std::path::Path;
use std::sync::Arc;

use crate::engine::{vocab_from_gguf, Engine, EngineOptions};
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use crate::model::bert::{BertModel, Pooling};
use crate::tokenizer::Tokenizer;
use hologram_kernels::Pool;

pub struct Encoder {
    path: String,
    file: GgufFile,
    tokenizer: Arc<Tokenizer>,
    model: BertModel,
    pool: Pool,
}

/// A loaded model of either kind.
pub enum Loaded {
    /// Decoder-only language model (generation, logits, hidden-state embeddings).
    Decoder(Box<Engine>),
    /// Encoder embedding model.
    Encoder(Box<Encoder>),
}

/// Open `path` and load it as whichever kind its `general.architecture` says.
pub fn load(path: &Path, opts: EngineOptions) -> Result<Loaded> {
    let file = GgufFile::open(path)?;
    match file.get_str("general.architecture")? {
        Some("bert") => Ok(Loaded::Encoder(Box::new(Encoder::from_file(
            path,
            file,
            opts.n_threads,
        )?))),
        _ => Ok(Loaded::Decoder(Box::new(Engine::from_file(
            path, file, opts,
        )?))),
    }
}

impl Encoder {
    fn from_file(path: &Path, file: GgufFile, n_threads: Option<usize>) -> Result<Self> {
        if n_threads == Some(0) {
            return Err(EngineError::InvalidArgument(
                "n_threads must be positive".into(),
            ));
        }
        let tokenizer = Arc::new(Tokenizer::new(vocab_from_gguf(&file)?)?);
        let model = BertModel::load(&file, tokenizer.n_vocab())?;
        let n_threads = n_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool = Pool::new(n_threads)
            .map_err(|e| EngineError::InvalidArgument(format!("thread pool: {e}")))?;
        Ok(Encoder {
            path: path.display().to_string(),
            file,
            tokenizer,
            model,
            pool,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn model(&self) -> &BertModel {
        &self.model
    }
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }
    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// The pooling the model was trained with (`bert.pooling_type`), mean when unset.
    pub fn default_pooling(&self) -> Pooling {
        match self.model.cfg.pooling {
            Pooling::None => Pooling::Mean,
            p => p,
        }
    }

    /// Pooled vectors of a batch of token sequences: `(inputs.len(), n_embd)` into `out`.
    pub fn embed(
        &self,
        inputs: &[Vec<u32>],
        pooling: Pooling,
        normalize: bool,
        out: &mut [f32],
    ) -> Result<()> {
        self.model
            .embed(&self.file, &self.pool, inputs, pooling, normalize, out)
    }

    /// What the embedding API returns: pooled vectors `(inputs.len(), n_embd)`, or with
    /// `Pooling::None` the per-token states of all inputs concatenated; L2-normalised (per
    /// vector) if `normalize`.
    pub fn vectors(
        &self,
        inputs: &[Vec<u32>],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<f32>> {
        let e = self.model.cfg.n_embd;
        if pooling == Pooling::None {
            let mut h = self.hidden_states(inputs)?;
            if normalize {
                h.chunks_mut(e).for_each(crate::model::bert::l2_normalize);
            }
            return Ok(h);
        }
        let mut out = vec![0f32; inputs.len() * e];
        self.embed(inputs, pooling, normalize, &mut out)?;
        Ok(out)
    }

    /// Per-token final hidden states of a batch, concatenated: `(sum of lengths, n_embd)`.
    pub fn hidden_states(&self, inputs: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.model.hidden_states(&self.file, &self.pool, inputs)
    }
}
