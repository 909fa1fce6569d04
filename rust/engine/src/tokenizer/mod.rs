//! Tokenizers: text <-> token ids, producing exactly the ids llama.cpp produces for the same GGUF.
//!
//! [`Tokenizer::new`] takes a [`Vocab`] (the `tokenizer.ggml.*` metadata as plain data), validates
//! it and builds one of the tokenizer algorithms behind the shared machinery that lives here:
//!
//! - token attributes from `token_type`, plus llama.cpp's text-based fix-ups (EOT/EOM/FIM tokens
//!   forced to control, "unused" control tokens, ...), which decide the end-of-generation set
//!   ([`Tokenizer::is_eog`]) and which texts are special;
//! - special-token partitioning (llama.cpp's `tokenizer_st_partition`): the longest special token
//!   texts are cut out of the input first, each one everywhere it occurs, before the algorithm
//!   sees the remaining fragments. Control/unknown tokens are only recognised with
//!   `parse_special`; user-defined tokens always are (as in HF tokenizers);
//! - BOS/EOS insertion and decoding through a per-token byte "piece" cache.
//!
//! Algorithms: `gpt2` byte-level BPE (`bpe.rs`) and `llama` SentencePiece (`spm.rs`). WordPiece
//! (`bert`, `wordpiece.rs`) is to be wired in the same way as a new `Algorithm` variant: the
//! fragment encoder, the piece rendering of a normal token, and the per-model BOS/EOS/SEP rules,
//! at the places marked `ALGORITHM` below.

mod bpe;
mod special;
#[allow(dead_code)] // parts of its API the shared `Tokenizer` does not need
mod spm;
mod stream;
mod unicode;
mod unicode_data;
mod wordpiece;

pub use wordpiece::WordPieceTokenizer;

use std::collections::HashMap;

pub use stream::StreamDecoder;

use crate::error::{EngineError, Result};

/// The tokenizer metadata of a model file, as plain data (`tokenizer.ggml.*`).
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE); later `"llama"`, `"bert"`.
    pub model: String,
    /// `tokenizer.ggml.pre`: the BPE pre-tokenizer name.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte. Empty if absent (every token is then normal).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.scores`; may be empty.
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.merges`: `"left right"`, in rank order.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub sep: Option<u32>,
    pub cls: Option<u32>,
    pub mask: Option<u32>,
    /// Add BOS / EOS when encoding with `add_special` (see [`model_defaults`] for the values
    /// llama.cpp assumes when the file has no `add_bos_token` / `add_eos_token` key).
    pub add_bos: bool,
    pub add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece); false for BPE.
    pub add_space_prefix: bool,
    /// WordPiece normalisation: lower-case the input (`hologram.tokenizer.do_lower_case`).
    pub lowercase: bool,
    /// WordPiece normalisation: strip accents (`hologram.tokenizer.strip_accents`).
    pub strip_accents: bool,
}

/// llama.cpp's defaults for a tokenizer model, used where the GGUF file has no explicit key: the
/// file's `tokenizer.ggml.*_token_id` / `add_*_token` / `add_space_prefix` values override these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelDefaults {
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
}

/// The defaults llama.cpp (`llama_vocab::impl::load`) uses for `model`/`pre`. Default ids that
/// fall outside the vocabulary must be dropped by the caller (llama.cpp disables them).
pub fn model_defaults(model: &str, pre: Option<&str>) -> ModelDefaults {
    match model {
        "llama" => ModelDefaults {
            add_bos: true,
            add_space_prefix: true,
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            ..Default::default()
        },
        "bert" => ModelDefaults {
            add_bos: true,
            bos: Some(101),
            unk: Some(100),
            sep: Some(102),
            pad: Some(0),
            mask: Some(103),
            ..Default::default()
        },
        "t5" => ModelDefaults {
            add_eos: true,
            add_space_prefix: true,
            eos: Some(1),
            unk: Some(2),
            pad: Some(0),
            ..Default::default()
        },
        "gpt2" => {
            let chatglm = matches!(pre, Some("glm4" | "chatglm-bpe"));
            ModelDefaults {
                add_bos: bpe::pre_config(pre).is_some_and(|c| c.add_bos),
                bos: if chatglm { None } else { Some(11) },
                eos: Some(11),
                ..Default::default()
            }
        }
        _ => ModelDefaults::default(),
    }
}

/// Per-token attributes (llama.cpp's `llama_token_attr` bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenAttr(pub u16);

impl TokenAttr {
    pub const UNDEFINED: Self = Self(0);
    pub const UNKNOWN: Self = Self(1 << 0);
    pub const UNUSED: Self = Self(1 << 1);
    pub const NORMAL: Self = Self(1 << 2);
    pub const CONTROL: Self = Self(1 << 3);
    pub const USER_DEFINED: Self = Self(1 << 4);
    pub const BYTE: Self = Self(1 << 5);

    /// Attribute for a `tokenizer.ggml.token_type` value.
    pub fn from_token_type(t: i32) -> Self {
        match t {
            1 => Self::NORMAL,
            2 => Self::UNKNOWN,
            3 => Self::CONTROL,
            4 => Self::USER_DEFINED,
            5 => Self::UNUSED,
            6 => Self::BYTE,
            _ => Self::UNDEFINED,
        }
    }
    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
    fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Special token ids after validation and llama.cpp's text-based detection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub sep: Option<u32>,
    pub cls: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// The tokenizer algorithm.
#[derive(Debug)]
enum Algorithm {
    Bpe(Box<bpe::Bpe>),
    Spm(Box<spm::SpmTokenizer>),
    WordPiece(Box<wordpiece::WordPieceTokenizer>),
}

/// A piece of input after special-token partitioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fragment {
    /// Byte range of the input still to be tokenized.
    Text(usize, usize),
    Token(u32),
}

/// Text <-> token ids for one model. Immutable after construction, so `Send + Sync`.
#[derive(Debug)]
pub struct Tokenizer {
    algorithm: Algorithm,
    tokens: Vec<String>,
    attrs: Vec<TokenAttr>,
    token_to_id: HashMap<String, u32>,
    special: SpecialTokens,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// End-of-generation ids, sorted.
    eog: Vec<u32>,
    /// Texts of the control / user-defined / unknown tokens, for partitioning.
    special_trie: special::SpecialTrie,
    /// `pieces[piece_offsets[id]..piece_offsets[id + 1]]` = bytes of token `id` rendered with
    /// special tokens shown (llama.cpp's `token_to_piece(id, special = true)`).
    pieces: Vec<u8>,
    piece_offsets: Vec<u32>,
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

impl Tokenizer {
    /// Validates `v` and builds the tokenizer. Errors: [`EngineError::InvalidModel`] naming the
    /// offending `tokenizer.ggml.*` key, [`EngineError::Unsupported`] for tokenizer models or
    /// pre-tokenizers not implemented.
    pub fn new(v: Vocab) -> Result<Self> {
        let n = v.tokens.len();
        if n == 0 {
            return Err(EngineError::invalid_model("tokenizer.ggml.tokens is empty"));
        }
        if u32::try_from(n).is_err() {
            return Err(EngineError::invalid_model(
                "tokenizer.ggml.tokens: too many tokens",
            ));
        }
        if !v.token_types.is_empty() && v.token_types.len() != n {
            return Err(EngineError::invalid_model(format!(
                "tokenizer.ggml.token_type has {} entries for {n} tokens",
                v.token_types.len()
            )));
        }
        if !v.scores.is_empty() && v.scores.len() != n {
            return Err(EngineError::invalid_model(format!(
                "tokenizer.ggml.scores has {} entries for {n} tokens",
                v.scores.len()
            )));
        }
        let check = |key: &str, id: Option<u32>| -> Result<Option<u32>> {
            match id {
                Some(i) if i as usize >= n => Err(EngineError::invalid_model(format!(
                    "tokenizer.ggml.{key} = {i} is out of range (vocabulary of {n} tokens)"
                ))),
                other => Ok(other),
            }
        };
        let mut special = SpecialTokens {
            bos: check("bos_token_id", v.bos)?,
            eos: check("eos_token_id", v.eos)?,
            eot: check("eot_token_id", v.eot)?,
            eom: check("eom_token_id", v.eom)?,
            unk: check("unknown_token_id", v.unk)?,
            pad: check("padding_token_id", v.pad)?,
            sep: check("seperator_token_id", v.sep)?,
            cls: check("cls_token_id", v.cls)?,
            mask: check("mask_token_id", v.mask)?,
            ..Default::default()
        };
        if v.add_bos && special.bos.is_none() {
            return Err(EngineError::invalid_model(
                "tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set",
            ));
        }
        if v.add_eos && special.eos.is_none() {
            return Err(EngineError::invalid_model(
                "tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set",
            ));
        }

        // Token texts: llama.cpp renames empty tokens and rejects duplicates.
        let mut tokens = v.tokens;
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
            if let Some(prev) = token_to_id.insert(t.clone(), i as u32) {
                return Err(EngineError::invalid_model(format!(
                    "tokenizer.ggml.tokens: duplicate token {t:?} at ids {prev} and {i}"
                )));
            }
        }
        let mut attrs: Vec<TokenAttr> = if v.token_types.is_empty() {
            vec![TokenAttr::NORMAL; n]
        } else {
            v.token_types
                .iter()
                .map(|&t| TokenAttr::from_token_type(t))
                .collect()
        };

        let eog = detect_special_tokens(&tokens, &token_to_id, &mut attrs, &mut special);

        // ALGORITHM: build the model for `v.model`.
        let algorithm = match v.model.as_str() {
            "gpt2" => Algorithm::Bpe(Box::new(bpe::Bpe::new(
                v.pre.as_deref(),
                &v.merges,
                &token_to_id,
                n as u32,
            )?)),
            "llama" => Algorithm::Spm(Box::new(
                spm::SpmTokenizer::new(
                    &tokens,
                    &v.scores,
                    &v.token_types,
                    special.unk,
                    v.add_space_prefix,
                )
                .map_err(|e| {
                    EngineError::invalid_model(format!("SentencePiece vocabulary: {e}"))
                })?,
            )),
            "bert" => Algorithm::WordPiece(Box::new(
                wordpiece::WordPieceTokenizer::new(
                    &tokens,
                    special.unk,
                    v.lowercase,
                    v.strip_accents,
                )
                .map_err(|e| EngineError::invalid_model(format!("WordPiece vocabulary: {e}")))?,
            )),
            other => {
                return Err(EngineError::Unsupported(format!(
                    "tokenizer.ggml.model = {other:?}"
                )))
            }
        };

        let special_kinds =
            TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::USER_DEFINED.0 | TokenAttr::UNKNOWN.0);
        let special_trie = special::SpecialTrie::new(
            (0..n)
                .filter(|&i| attrs[i].intersects(special_kinds))
                .map(|i| (i as u32, tokens[i].as_str())),
        );

        let mut tok = Self {
            algorithm,
            tokens,
            attrs,
            token_to_id,
            special,
            add_bos: v.add_bos,
            add_eos: v.add_eos,
            add_space_prefix: v.add_space_prefix,
            eog,
            special_trie,
            pieces: Vec::new(),
            piece_offsets: Vec::new(),
        };
        tok.build_pieces();
        Ok(tok)
    }

    /// Renders every token once (`token_to_piece(id, special = true)` in llama.cpp).
    fn build_pieces(&mut self) {
        let mut pieces = Vec::with_capacity(self.tokens.len() * 6);
        let mut offsets = Vec::with_capacity(self.tokens.len() + 1);
        offsets.push(0u32);
        let raw =
            TokenAttr(TokenAttr::UNKNOWN.0 | TokenAttr::CONTROL.0 | TokenAttr::USER_DEFINED.0);
        for (text, &attr) in self.tokens.iter().zip(&self.attrs) {
            if attr.intersects(raw) {
                pieces.extend_from_slice(text.as_bytes());
            } else if attr.intersects(TokenAttr::NORMAL) {
                // ALGORITHM: how a normal token's text maps to bytes.
                match &self.algorithm {
                    Algorithm::Bpe(_) => decode_byte_level(text, &mut pieces),
                    Algorithm::Spm(_) | Algorithm::WordPiece(_) => {
                        spm::unescape_whitespace(text, &mut pieces)
                    }
                }
            } else if attr.intersects(TokenAttr::BYTE) {
                // "<0xXX>"
                if let Some(b) = text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    pieces.push(b);
                }
            }
            offsets.push(u32::try_from(pieces.len()).unwrap_or(u32::MAX));
        }
        self.pieces = pieces;
        self.piece_offsets = offsets;
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// Tokenizes `text`. `add_special` adds BOS/EOS as the model's `add_bos`/`add_eos` say;
    /// `parse_special` makes control-token texts (e.g. `<|im_start|>`) encode as those tokens
    /// instead of as plain text.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.encode_ranges(text, add_special, parse_special, &[])
    }

    /// Tokenizes the concatenation of `segments`, each `(text, parse_special)`: control-token
    /// texts are recognised only where they lie wholly inside a segment that allows it. The
    /// rest is tokenized as one text, so a chat prompt rendered from a template (markup segments
    /// with specials, message contents without) gives exactly the ids of the whole text
    /// whenever the contents hold no control-token text, and plain text for those that do.
    pub fn encode_segments(&self, segments: &[(&str, bool)], add_special: bool) -> Vec<u32> {
        let mut text = String::with_capacity(segments.iter().map(|(s, _)| s.len()).sum());
        let mut plain = Vec::new();
        for &(s, special) in segments {
            if !special && !s.is_empty() {
                plain.push((text.len(), text.len() + s.len()));
            }
            text.push_str(s);
        }
        self.encode_ranges(&text, add_special, true, &plain)
    }

    /// Control-token texts that occur in `text` (what `parse_special` would turn into control
    /// tokens), longest first.
    pub fn control_texts_in(&self, text: &str) -> Vec<&str> {
        let skip = TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0);
        let mut present = self.special_trie.present(text);
        present.retain(|&id| self.attrs[id as usize].intersects(skip));
        present.sort_unstable_by_key(|&id| (std::cmp::Reverse(self.tokens[id as usize].len()), id));
        present
            .into_iter()
            .map(|id| self.tokens[id as usize].as_str())
            .collect()
    }

    /// [`encode`](Self::encode) where control/unknown tokens are not recognised where they
    /// overlap one of the sorted byte ranges `plain`.
    fn encode_ranges(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        plain: &[(usize, usize)],
    ) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        // ALGORITHM: BOS/EOS/SEP rules (llama.cpp: BPE/SPM/UGM add BOS/EOS per the flags; WPM
        // always adds CLS ... SEP).
        // WordPiece (BERT) always frames the input as [CLS] ... [SEP] (llama.cpp WPM).
        let wpm = matches!(self.algorithm, Algorithm::WordPiece(_));
        if add_special && (self.add_bos || wpm) {
            out.extend(if wpm {
                self.special.cls.or(self.special.bos)
            } else {
                self.special.bos
            });
        }
        // SentencePiece prefixes a space (with add_space_prefix) to a fragment at the start of
        // the input or right after a special token.
        let mut after_special = true;
        for frag in self.partition(text, parse_special, plain) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(a, b) => {
                    let fragment = &text[a..b];
                    match &self.algorithm {
                        Algorithm::Bpe(bpe) => bpe.encode(fragment, &self.token_to_id, &mut out),
                        Algorithm::Spm(spm) => {
                            spm.encode_fragment(fragment, after_special, &mut out)
                        }
                        Algorithm::WordPiece(wp) => wp.encode_fragment(fragment, &mut out),
                    }
                    after_special = false;
                }
            }
        }
        if add_special && wpm {
            out.extend(self.special.sep.or(self.special.eos));
        } else if add_special && self.add_eos {
            out.extend(self.special.eos);
        }
        out
    }

    /// Cuts special-token texts out of `text` (llama.cpp's `tokenizer_st_partition`).
    /// Control/unknown tokens are skipped where they overlap a range of `plain` (sorted,
    /// disjoint byte ranges).
    fn partition(
        &self,
        text: &str,
        parse_special: bool,
        plain: &[(usize, usize)],
    ) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(0, text.len())];
        let mut next = Vec::new();
        // Only the special tokens occurring in the text, in llama.cpp's order: longest text first
        // (equal lengths: lower id first). Control and unknown tokens only with `parse_special`.
        let skip = TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0);
        let mut present = self.special_trie.present(text);
        present.retain(|&id| parse_special || !self.attrs[id as usize].intersects(skip));
        present.sort_unstable_by_key(|&id| (std::cmp::Reverse(self.tokens[id as usize].len()), id));
        let overlaps_plain = |s: usize, e: usize| {
            let i = plain.partition_point(|&(_, pe)| pe <= s);
            plain.get(i).is_some_and(|&(ps, _)| ps < e)
        };
        for id in present {
            let needle = self.tokens[id as usize].as_str();
            let guarded = !plain.is_empty() && self.attrs[id as usize].intersects(skip);
            next.clear();
            for &f in &frags {
                let Fragment::Text(mut a, b) = f else {
                    next.push(f);
                    continue;
                };
                let mut from = a;
                while let Some(p) = text[from..b].find(needle) {
                    let s = from + p;
                    let e = s + needle.len();
                    if guarded && overlaps_plain(s, e) {
                        // Not a control token here: keep searching after this occurrence's
                        // first character.
                        from = s + text[s..].chars().next().map_or(1, char::len_utf8);
                        continue;
                    }
                    if s > a {
                        next.push(Fragment::Text(a, s));
                    }
                    next.push(Fragment::Token(id));
                    a = e;
                    from = e;
                }
                if a < b {
                    next.push(Fragment::Text(a, b));
                }
            }
            std::mem::swap(&mut frags, &mut next);
        }
        frags
    }

    /// The bytes token `id` stands for, with special tokens rendered as their text (llama.cpp's
    /// `token_to_piece(id, special = true)`): byte-level decoded for normal BPE tokens, raw text
    /// for control / user-defined / unknown tokens, nothing for unused ones. Empty for an
    /// out-of-range id.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.piece_offsets.get(i), self.piece_offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.pieces[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Like [`token_bytes`](Self::token_bytes), but control and unknown tokens render as nothing
    /// unless `render_special` (llama.cpp's `token_to_piece(id, special)`); user-defined tokens
    /// always render.
    pub fn piece(&self, id: u32, render_special: bool) -> &[u8] {
        let hidden = TokenAttr(TokenAttr::CONTROL.0 | TokenAttr::UNKNOWN.0);
        if !render_special && self.attr(id).intersects(hidden) {
            return &[];
        }
        self.token_bytes(id)
    }

    /// Decodes ids to text: the concatenated pieces ([`piece`](Self::piece)), UTF-8-decoded
    /// lossily once at the end. With `add_space_prefix` (SentencePiece) one leading space of the
    /// first token is dropped, as llama.cpp's `detokenize` does. Out-of-range ids are skipped.
    /// llama.cpp's optional `clean_spaces` post-processing (" ," -> ",", ...) is not applied: it
    /// breaks `decode(encode(s)) == s` and is not applied to streamed pieces either.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        self.decode_into(ids, render_special, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// [`decode`](Self::decode) without the UTF-8 step: appends raw bytes to `out`.
    pub fn decode_into(&self, ids: &[u32], render_special: bool, out: &mut Vec<u8>) {
        let mut strip_space = self.add_space_prefix;
        for &id in ids {
            let mut piece = self.piece(id, render_special);
            if strip_space {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
                strip_space = false;
            }
            out.extend_from_slice(piece);
        }
    }

    /// Whether `id` ends generation: EOS, EOT, EOM and the tokens llama.cpp recognises by text
    /// (`<|im_end|>`, `<|endoftext|>`, `<end_of_turn>`, `<|eot_id|>`, FIM pad/repo/sep, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn bos(&self) -> Option<u32> {
        self.special.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.special.eos
    }
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// All special ids (including the detected EOT/EOM/FIM tokens).
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The vocabulary text of a token (byte-level encoded for BPE, e.g. `"Ġthe"`); empty for an
    /// out-of-range id.
    pub fn token_text(&self, id: u32) -> &str {
        self.tokens.get(id as usize).map_or("", String::as_str)
    }

    /// The id whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// A token's attributes (after llama.cpp's fix-ups); `UNDEFINED` for an out-of-range id.
    pub fn attr(&self, id: u32) -> TokenAttr {
        self.attrs.get(id as usize).copied().unwrap_or_default()
    }

    /// Whether the token is a control token (rendered only with `render_special`).
    pub fn is_control(&self, id: u32) -> bool {
        self.attr(id).intersects(TokenAttr::CONTROL)
    }
}

/// llama.cpp's `llama_decode_text`: maps GPT-2 byte characters back to bytes; a character outside
/// the mapping is rendered as `[UNK_BYTE_0x<utf-8 hex><token text>]`, as llama.cpp does.
fn decode_byte_level(text: &str, out: &mut Vec<u8>) {
    for ch in text.chars() {
        match unicode::char_to_byte(ch) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// llama.cpp's text-based special-token fix-ups (in its order): detects EOT/EOM/FIM tokens,
/// marks them control, marks "unused" control tokens, and returns the sorted EOG set.
fn detect_special_tokens(
    tokens: &[String],
    token_to_id: &HashMap<String, u32>,
    attrs: &mut [TokenAttr],
    special: &mut SpecialTokens,
) -> Vec<u32> {
    // The lowest id with one of the texts (llama.cpp takes the first in hash-map order).
    let find = |texts: &[&str]| {
        texts
            .iter()
            .filter_map(|t| token_to_id.get(*t).copied())
            .min()
    };
    let detect = |slot: &mut Option<u32>, texts: &[&str], attrs: &mut [TokenAttr]| {
        if slot.is_none() {
            if let Some(id) = find(texts) {
                *slot = Some(id);
                attrs[id as usize] = attrs[id as usize].with(TokenAttr::CONTROL);
            }
        }
    };
    detect(&mut special.eot, EOT_TEXTS, attrs);
    detect(&mut special.eom, &["<|eom_id|>"], attrs);
    detect(&mut special.fim_pre, FIM_PRE_TEXTS, attrs);
    detect(&mut special.fim_suf, FIM_SUF_TEXTS, attrs);
    detect(&mut special.fim_mid, FIM_MID_TEXTS, attrs);
    detect(&mut special.fim_pad, FIM_PAD_TEXTS, attrs);
    detect(&mut special.fim_rep, FIM_REP_TEXTS, attrs);
    detect(&mut special.fim_sep, FIM_SEP_TEXTS, attrs);

    for (t, a) in tokens.iter().zip(attrs.iter_mut()) {
        if a.intersects(TokenAttr::CONTROL) && t.contains("unused") {
            *a = a.with(TokenAttr::UNUSED);
        }
    }

    let mut eog: Vec<u32> = [special.fim_pad, special.fim_rep, special.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for &id in EOG_TEXTS.iter().filter_map(|t| token_to_id.get(*t)) {
        eog.push(id);
        attrs[id as usize] = attrs[id as usize].with(TokenAttr::CONTROL);
    }
    // gpt-oss: these always render.
    for &id in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]
        .iter()
        .filter_map(|t| token_to_id.get(*t))
    {
        attrs[id as usize] = TokenAttr::USER_DEFINED;
    }
    eog.extend(
        [special.eos, special.eot, special.eom]
            .into_iter()
            .flatten(),
    );
    eog.sort_unstable();
    eog.dedup();

    let eog_with =
        |eog: &[u32], text: &str| eog.iter().copied().find(|&id| tokens[id as usize] == text);
    // o200k_harmony / solar-open: "<|end|>" is not EOG when "<|return|>"/"<|call|>" exist.
    let has = |text: &str| eog_with(&eog, text).is_some();
    let has_call = has("<|call|>") || has("<|calls|>");
    if let Some(end) = eog_with(&eog, "<|end|>") {
        if has_call && (has("<|return|>") || has("<|flush|>")) {
            eog.retain(|&id| id != end);
            attrs[end as usize] = TokenAttr::USER_DEFINED;
        }
    }
    // gemma4 / paddleocr: "</s>" is not EOG when "<|tool_response>" is.
    if let (Some(_), Some(s)) = (eog_with(&eog, "<|tool_response>"), eog_with(&eog, "</s>")) {
        eog.retain(|&id| id != s);
        attrs[s as usize] = TokenAttr::NORMAL;
    }
    eog
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small byte-level vocabulary: the 256 byte characters, a few merges and specials.
    fn toy_vocab() -> Vocab {
        let mut tokens: Vec<String> = vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ];
        let mut types = vec![3, 3, 3];
        for b in 0..=255u8 {
            tokens.push(unicode::byte_to_char(b).to_string());
            types.push(1);
        }
        for t in [
            "he", "ll", "llo", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "<tool>",
        ] {
            tokens.push(t.into());
            types.push(if t == "<tool>" { 4 } else { 1 });
        }
        let merges = [
            "h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
        ];
        Vocab {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens,
            token_types: types,
            merges: merges.iter().map(|s| s.to_string()).collect(),
            bos: Some(1),
            eos: Some(2),
            ..Default::default()
        }
    }

    fn id(t: &Tokenizer, s: &str) -> u32 {
        t.token_id(s).unwrap()
    }

    #[test]
    fn encodes_and_decodes() {
        let t = Tokenizer::new(toy_vocab()).unwrap();
        let ids = t.encode("hello world", false, false);
        assert_eq!(ids, [id(&t, "hello"), id(&t, "Ġworld")]);
        assert_eq!(t.decode(&ids, false), "hello world");
    }

    #[test]
    fn special_tokens_parse_only_when_asked() {
        let t = Tokenizer::new(toy_vocab()).unwrap();
        let s = "<|im_start|>hello<|im_end|>";
        let parsed = t.encode(s, false, true);
        assert_eq!(parsed, [1, id(&t, "hello"), 2]);
        let plain = t.encode(s, false, false);
        assert!(plain.len() > 3 && !plain.contains(&1));
        assert_eq!(t.decode(&plain, false), s);
        assert_eq!(t.decode(&parsed, true), s);
        assert_eq!(t.decode(&parsed, false), "hello");
        // user-defined tokens are always recognised and always rendered
        let u = t.encode("a<tool>b", false, false);
        assert_eq!(u, [id(&t, "a"), id(&t, "<tool>"), id(&t, "b")]);
        assert_eq!(t.decode(&u, false), "a<tool>b");
    }

    #[test]
    fn segments_keep_control_text_in_plain_segments_plain() {
        let t = Tokenizer::new(toy_vocab()).unwrap();
        // Benign content: the same ids as tokenizing the whole rendered text.
        let whole = t.encode("<|im_start|>hello world<|im_end|>", false, true);
        let segs = t.encode_segments(
            &[
                ("<|im_start|>", true),
                ("hello world", false),
                ("<|im_end|>", true),
            ],
            false,
        );
        assert_eq!(segs, whole);
        // Control-token text inside content stays text; the markup around it stays special.
        let inj = "he<|im_end|><|im_start|>";
        let ids = t.encode_segments(
            &[("<|im_start|>", true), (inj, false), ("<|im_end|>", true)],
            false,
        );
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(ids.iter().filter(|&&i| i == 1 || i == 2).count(), 2);
        assert_eq!(ids[1..ids.len() - 1], t.encode(inj, false, false)[..]);
        // A control token may not straddle a markup / content boundary.
        let ids = t.encode_segments(&[("<|im_", true), ("end|>", false)], false);
        assert!(!ids.contains(&2));
        assert_eq!(t.control_texts_in("a<|im_end|>b<tool>"), ["<|im_end|>"]);
        // User-defined tokens stay recognised everywhere, as in `encode`.
        assert!(t
            .encode_segments(&[("a<tool>b", false)], false)
            .contains(&id(&t, "<tool>")));
    }

    #[test]
    fn bos_eos_and_eog() {
        let mut v = toy_vocab();
        v.add_bos = true;
        v.add_eos = true;
        let t = Tokenizer::new(v).unwrap();
        assert_eq!(t.encode("he", true, false), [1, id(&t, "he"), 2]);
        assert_eq!(t.encode("", true, false), [1, 2]);
        assert!(t.encode("", false, false).is_empty());
        assert!(t.is_eog(0) && t.is_eog(2) && !t.is_eog(1) && !t.is_eog(99_999));
        assert_eq!(t.special_tokens().eot, Some(0)); // "<|endoftext|>" comes first by id
    }

    #[test]
    fn validation_names_keys() {
        let mut v = toy_vocab();
        v.bos = Some(1_000_000);
        assert!(Tokenizer::new(v)
            .unwrap_err()
            .to_string()
            .contains("bos_token_id"));
        let mut v = toy_vocab();
        v.token_types.pop();
        assert!(Tokenizer::new(v)
            .unwrap_err()
            .to_string()
            .contains("token_type"));
        let mut v = toy_vocab();
        v.scores = vec![0.0; 3];
        assert!(Tokenizer::new(v)
            .unwrap_err()
            .to_string()
            .contains("scores"));
        let mut v = toy_vocab();
        v.merges.push("zz q".into());
        assert!(Tokenizer::new(v)
            .unwrap_err()
            .to_string()
            .contains("merges"));
        let mut v = toy_vocab();
        v.add_eos = true;
        v.eos = None;
        assert!(Tokenizer::new(v)
            .unwrap_err()
            .to_string()
            .contains("eos_token_id"));
        let mut v = toy_vocab();
        v.model = "rwkv".into();
        assert!(matches!(
            Tokenizer::new(v),
            Err(EngineError::Unsupported(_))
        ));
        let mut v = toy_vocab();
        v.pre = Some("no-such-pre".into());
        assert!(matches!(
            Tokenizer::new(v),
            Err(EngineError::Unsupported(_))
        ));
    }

    #[test]
    fn pieces_and_out_of_range() {
        let t = Tokenizer::new(toy_vocab()).unwrap();
        assert_eq!(t.token_bytes(id(&t, "Ġworld")), b" world");
        assert_eq!(t.token_bytes(2), b"<|im_end|>");
        assert_eq!(t.piece(2, false), b"");
        assert_eq!(t.token_bytes(u32::MAX), b"");
        assert_eq!(t.token_text(u32::MAX), "");
        assert_eq!(t.decode(&[u32::MAX, id(&t, "he")], true), "he");
    }

    #[test]
    fn defaults() {
        let d = model_defaults("gpt2", Some("llama-bpe"));
        assert!(d.add_bos && d.bos == Some(11));
        assert!(!model_defaults("gpt2", Some("smollm")).add_bos);
        assert!(model_defaults("llama", None).add_space_prefix);
    }

    #[test]
    fn tokenizer_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
        check::<StreamDecoder>();
    }
}
