//! Structured output: constrained decoding with [llguidance] (JSON schemas, Lark grammars,
//! regexes), the library llama.cpp, vLLM and SGLang use.
//!
//! A grammar is llguidance's `TopLevelGrammar` as JSON text (`{"grammars": [{"json_schema":
//! ...}]}` or `{"grammars": [{"lark_grammar": "..."}]}`); a text that does not start with `{`
//! is taken as a Lark grammar. [`Grammars`] (one per model, shared by every request) builds the
//! token environment from hologram's own tokenizer the first time a grammar is compiled, and
//! keeps the last few compiled grammars so a schema sent again (agents send the same one with
//! every request, and the `n` choices of a request share theirs) is cloned, not recompiled.
//!
//! A [`Constraint`] is one sequence's parser state. Before each sample its token mask (the
//! tokens that keep the output inside the grammar, plus the end-of-generation tokens once the
//! grammar accepts) is computed; the sampler sees the disallowed tokens' logits as `-inf`; the
//! sampled token is then committed. When the grammar can go no further the generation ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

use crate::error::{EngineError, Result};
use crate::tokenizer::{TokenAttr, Tokenizer};

/// Compiled grammars kept for reuse (per model).
const CACHE_ENTRIES: usize = 16;
/// Longest grammar text accepted (a JSON schema of a few thousand properties fits easily).
pub const MAX_GRAMMAR_BYTES: usize = 1 << 20;
/// Longest error message passed on (llguidance's can quote the whole grammar).
const MAX_ERROR_CHARS: usize = 1000;

/// The tokenizer as llguidance sees it: every token's bytes in a trie, special tokens marked.
struct TokenEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TokenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        // Only used by llguidance to force whole tokens, which the matcher does not do here
        // (every token is sampled): the greedy tokenization is enough.
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// The bytes llguidance should know each token by. Control, unknown and end-of-generation
/// tokens are special: their bytes start with llguidance's marker byte 0xFF (never valid
/// UTF-8), so no grammar can produce them as text; end-of-generation ids are allowed only
/// where the grammar accepts.
fn token_words(tok: &Tokenizer) -> Vec<Vec<u8>> {
    let special = TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0);
    (0..tok.n_vocab() as u32)
        .map(|id| {
            if tok.attr(id).intersects(special) || tok.is_eog(id) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                let text = tok.token_text(id);
                if text.is_empty() {
                    w.extend_from_slice(format!("[{id}]").as_bytes());
                } else {
                    w.extend_from_slice(text.as_bytes());
                }
                w
            } else {
                tok.token_bytes(id).to_vec()
            }
        })
        .collect()
}

fn token_env(tok: &Tokenizer) -> std::result::Result<TokEnv, String> {
    let n = u32::try_from(tok.n_vocab()).map_err(|_| "the vocabulary is too large".to_string())?;
    if n == 0 {
        return Err("the vocabulary is empty".into());
    }
    let eog = tok.eog_ids();
    let eos = tok.eos().or_else(|| eog.first().copied());
    let Some(eos) = eos.filter(|&e| e < n) else {
        return Err("the model has no end-of-generation token".into());
    };
    let info = TokRxInfo {
        vocab_size: n,
        tok_eos: eos,
        tok_bos: tok.bos().filter(|&b| b < n),
        tok_pad: None,
        tok_unk: None,
        tok_end_of_turn: None,
    };
    let words = token_words(tok);
    let mut eos_ids: Vec<u32> = eog.iter().copied().filter(|&e| e < n).collect();
    if !eos_ids.contains(&eos) {
        eos_ids.push(eos);
    }
    // TokTrie::from asserts its invariants; a malformed vocabulary must not take the process
    // down.
    let trie = std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(&eos_ids))
        .map_err(|_| "the vocabulary cannot be indexed for constrained decoding".to_string())?;
    Ok(Arc::new(TokenEnv { trie }))
}

fn short(msg: impl std::fmt::Display) -> String {
    let s = msg.to_string();
    if s.chars().count() <= MAX_ERROR_CHARS {
        s
    } else {
        let mut t: String = s.chars().take(MAX_ERROR_CHARS).collect();
        t.push_str("...");
        t
    }
}

fn invalid(msg: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidArgument(format!("invalid grammar: {}", short(msg)))
}

/// A compiled grammar ready to start a sequence: its fresh matcher and first mask.
#[derive(Clone)]
struct Compiled {
    matcher: Matcher,
    mask: SimpleVob,
}

/// The grammar compiler of one model: its llguidance token environment (built on first use)
/// and the last compiled grammars.
pub struct Grammars {
    tokenizer: Arc<Tokenizer>,
    factory: OnceLock<std::result::Result<Arc<ParserFactory>, String>>,
    cache: Mutex<VecDeque<(String, Compiled)>>,
}

impl Grammars {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        Grammars {
            tokenizer,
            factory: OnceLock::new(),
            cache: Mutex::new(VecDeque::with_capacity(CACHE_ENTRIES)),
        }
    }

    /// The parser factory, built from the tokenizer on first use (about a tenth of a second
    /// for a 50k vocabulary).
    fn factory(&self) -> Result<&Arc<ParserFactory>> {
        let f = self.factory.get_or_init(|| {
            let env = token_env(&self.tokenizer)?;
            let mut f = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
            f.quiet();
            // Errors name the problem, not the whole parser state.
            f.limits_mut().verbose_errors = false;
            Ok(Arc::new(f))
        });
        f.as_ref().map_err(|e| {
            EngineError::Unsupported(format!(
                "constrained decoding is not available for this model: {e}"
            ))
        })
    }

    /// Compile `grammar` (see the module documentation) and compute its first mask. Errors
    /// (malformed JSON, an invalid or unsupported JSON schema, a Lark syntax error, a grammar
    /// that allows no token at all) are `InvalidArgument` naming the problem.
    pub fn compile(&self, grammar: &str) -> Result<Constraint> {
        let c = self.compiled(grammar)?;
        Ok(Constraint {
            matcher: c.matcher,
            mask: Some(c.mask),
            error: None,
            mask_time: Duration::ZERO,
            masks: 0,
        })
    }

    /// Check that `grammar` compiles (and keep it for the request that follows).
    pub fn check(&self, grammar: &str) -> Result<()> {
        self.compiled(grammar).map(|_| ())
    }

    fn compiled(&self, grammar: &str) -> Result<Compiled> {
        let lock = || self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = lock().iter().find(|(g, _)| g == grammar) {
            return Ok(c.clone());
        }
        if grammar.len() > MAX_GRAMMAR_BYTES {
            return Err(invalid(format!(
                "the grammar is {} bytes long (limit {MAX_GRAMMAR_BYTES})",
                grammar.len()
            )));
        }
        let factory = self.factory()?;
        let top = TopLevelGrammar::from_lark_or_grammar_list(grammar).map_err(invalid)?;
        if top.grammars.is_empty() {
            return Err(invalid("the grammar list is empty"));
        }
        let parser = factory.create_parser(top).map_err(invalid)?;
        let mut matcher = Matcher::new(Ok(parser));
        let mask = matcher.compute_mask().map_err(invalid)?;
        let c = Compiled { matcher, mask };
        let mut cache = lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.pop_front();
        }
        cache.push_back((grammar.to_string(), c.clone()));
        Ok(c)
    }
}

/// One sequence's grammar state.
pub struct Constraint {
    matcher: Matcher,
    /// The mask of the current state, once computed.
    mask: Option<SimpleVob>,
    /// A failure computing the mask, reported at the next sample.
    error: Option<String>,
    /// Time spent computing masks, and how many.
    mask_time: Duration,
    masks: u64,
}

impl Constraint {
    /// The mask of the current state is still to compute.
    pub fn needs_mask(&self) -> bool {
        self.mask.is_none() && self.error.is_none() && !self.matcher.is_stopped()
    }

    /// Compute the mask of the current state (if not done yet). Safe to call on another
    /// thread than the one sampling (the processor runs it during the forward pass).
    pub fn prepare(&mut self) {
        if !self.needs_mask() {
            return;
        }
        let t = Instant::now();
        match self.matcher.compute_mask() {
            Ok(m) => self.mask = Some(m),
            Err(e) => self.error = Some(short(e)),
        }
        self.mask_time += t.elapsed();
        self.masks += 1;
    }

    /// Set the logits of the tokens the grammar does not allow to `-inf`. Computes the mask
    /// first if needed; fails if it cannot be computed or allows nothing.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<()> {
        self.prepare();
        if let Some(e) = &self.error {
            return Err(EngineError::InvalidArgument(format!(
                "constrained decoding failed: {e}"
            )));
        }
        let Some(mask) = &self.mask else {
            return Err(EngineError::InvalidArgument(
                "constrained decoding failed: the grammar is complete".into(),
            ));
        };
        let words = mask.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            for (b, l) in chunk.iter_mut().enumerate() {
                if bits & (1 << b) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        Ok(())
    }

    /// Commit the sampled token (it must be one the mask allowed).
    pub fn commit(&mut self, token: u32) -> Result<()> {
        self.mask = None;
        self.matcher.consume_token(token).map_err(|e| {
            EngineError::InvalidArgument(format!("constrained decoding failed: {}", short(e)))
        })
    }

    /// The grammar is complete: nothing more can be generated.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Time spent computing masks and their number.
    pub fn mask_stats(&self) -> (Duration, u64) {
        (self.mask_time, self.masks)
    }
}
