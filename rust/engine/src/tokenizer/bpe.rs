//! GPT-2 style byte-level BPE (`tokenizer.ggml.model = "gpt2"`), as llama.cpp's
//! `llm_tokenizer_bpe_session`:
//!
//! 1. the text is cut into words by the pre-tokenizer regexes chosen by `tokenizer.ggml.pre`
//!    ([`pre_config`], llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*` table);
//! 2. each word's bytes are mapped to GPT-2's printable "byte characters", one symbol per byte;
//! 3. adjacent symbol pairs are merged lowest merge rank first (ties: leftmost first) with a
//!    binary heap over a linked list of symbols, until no pair has a rank;
//! 4. every final symbol is emitted as its token id; a symbol that is not a token (possible only
//!    with inconsistent vocabularies) falls back to its single-byte tokens like llama.cpp does.
//!
//! Symbols carry interned ids instead of strings: a merge `(left id, right id)` maps to
//! `(rank, result id)`, where result strings missing from the vocabulary get ids past `n_vocab`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::unicode::{byte_to_char, Splitter, GPT2_PATTERN, LLAMA3_PATTERN};
use crate::error::{EngineError, Result};

/// Pre-tokenizer settings for one `tokenizer.ggml.pre` value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreConfig {
    /// Regexes applied in sequence (llama.cpp's `regex_exprs`).
    pub patterns: &'static [&'static str],
    /// A whole word that is itself a token is emitted without merging (llama.cpp `ignore_merges`).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos` with this pre-tokenizer (the GGUF key overrides it).
    pub add_bos: bool,
}

const QWEN2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN35: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const JAIS2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}";
const CJK_KANA: &str = "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+";
const DEEPSEEK3_MAIN: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
const SPARK_MAIN: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+";
const PORO: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{0964}\u{06D4}\u{060C})]+";
const TEKKEN: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const GPT4O: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const GRANITE_EMB_MULTI: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const TINY_AYA_DIGITS: &str = "[0-9]{1,3}(?=(?:[0-9]{3})*\\b)";
const TINY_AYA: &str = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const BAILINGMOE: &str = "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
const SEED_CODER: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const UFAKZEKA: &str = "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const EXAONE_MOE: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
const MINICPM5: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// The pre-tokenizer for a `tokenizer.ggml.pre` value (`None`/empty = llama.cpp's "default");
/// `None` when llama.cpp handles it with code we do not have (deepseek-llm, youtu, kimi-k2,
/// superbpe, afmoe, gemma4, sarvam-moe, whitespace) or does not know it either.
pub(crate) fn pre_config(pre: Option<&str>) -> Option<PreConfig> {
    const fn cfg(patterns: &'static [&'static str]) -> PreConfig {
        PreConfig {
            patterns,
            ignore_merges: false,
            add_bos: false,
        }
    }
    let pre = pre.unwrap_or("");
    Some(match pre {
        "" | "default" => cfg(&[
            "[\\p{P}\\$\\+<=>\\^~\\|]+",
            GPT2_PATTERN,
            "\\p{N}+",
            "[0-9][0-9][0-9]",
        ]),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreConfig {
            patterns: &[LLAMA3_PATTERN],
            ignore_merges: true,
            add_bos: true,
        },
        "dbrx" | "smaug-bpe" | "glm4" | "chatglm-bpe" => cfg(&[LLAMA3_PATTERN]),
        "jais-2" => cfg(&[JAIS2]),
        "deepseek-coder" => cfg(&[
            "[\r\n]",
            "\\s?\\p{L}+",
            "\\s?\\p{P}+",
            "[\u{4E00}-\u{9FA5}\u{0800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            "\\p{N}",
        ]),
        "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => {
            cfg(&["\\p{N}{1,3}", CJK_KANA, DEEPSEEK3_MAIN])
        }
        "spark2_5" => cfg(&["\\p{N}{1,3}", CJK_KANA, SPARK_MAIN, "\\p{N}"]),
        "falcon" => cfg(&[
            "[\\p{P}\\$\\+<=>\\^~\\|`]+",
            GPT2_PATTERN,
            "[0-9][0-9][0-9]",
        ]),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => cfg(&["\\p{N}", GPT2_PATTERN]),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "exaone4" | "trillion" | "granite-docling" => {
            cfg(&[GPT2_PATTERN])
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "megrez" | "hunyuan"
        | "solar-open" | "grok-2" => cfg(&[QWEN2]),
        "qwen35" => cfg(&[QWEN35]),
        "poro-chat" | "bloom" | "gpt3-finnish" => cfg(&[PORO]),
        "viking" => cfg(&[PORO, "\\p{N}"]),
        "tekken" => PreConfig {
            patterns: &[TEKKEN],
            ignore_merges: true,
            add_bos: true,
        },
        "chameleon" => PreConfig {
            patterns: &[
                "<sentinel:[0-9]+>",
                "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                "([\\t\\n]|    |  )",
                "\\p{N}",
                "[\\p{P}!-/:-@\\[-`{-~]",
                GPT2_PATTERN,
            ],
            ignore_merges: false,
            add_bos: true,
        },
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => cfg(&[GPT4O]),
        "granite-embed-multi-97m" => PreConfig {
            patterns: &[GRANITE_EMB_MULTI],
            ignore_merges: true,
            add_bos: false,
        },
        "tiny_aya" | "cohere2moe" => cfg(&[TINY_AYA_DIGITS, TINY_AYA]),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => cfg(&[BAILINGMOE]),
        "seed-coder" => cfg(&[SEED_CODER]),
        "ufakzeka" => cfg(&[UFAKZEKA]),
        "laguna" => cfg(&["[^\\n]+|[\\n]+", QWEN2]),
        "exaone-moe" => cfg(&[EXAONE_MOE]),
        "minicpm5" => PreConfig {
            patterns: &["\\p{N}{1,3}", MINICPM5],
            ignore_merges: true,
            add_bos: false,
        },
        _ => return None,
    })
}

/// Hasher for the merge table's `u64` pair keys: murmur3's 64-bit finalizer, so both ids reach
/// the low bits the table indexes with (the std SipHash is several times slower and its DoS
/// resistance is not needed for keys taken from the model file).
#[derive(Default, Clone, Copy)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let mut h = self.0 ^ n;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        self.0 = h ^ (h >> 33);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    result: u32,
}

const NONE: u32 = u32::MAX;

#[inline]
fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// A symbol of the word being merged: `len` bytes of the word from `start` (0 once merged away).
#[derive(Clone, Copy, Debug)]
struct Symbol {
    id: u32,
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// Candidate merge, ordered lowest rank first, then leftmost (llama.cpp's comparator).
type Bigram = Reverse<(u32, u32, u32, u32, u32, u32)>; // (rank, left, right, left id, right id, result)

/// A byte-level BPE model over a vocabulary.
#[derive(Debug)]
pub(crate) struct Bpe {
    splitter: Splitter,
    ignore_merges: bool,
    merges: HashMap<u64, Merge, BuildHasherDefault<PairHasher>>,
    /// Token id of each byte's GPT-2 character, `NONE` when the vocabulary lacks it.
    byte_token: [u32; 256],
    n_vocab: u32,
}

impl Bpe {
    /// Builds the model. `merges` are `"left right"` strings in rank order; both sides must be
    /// tokens of the vocabulary (`token_to_id`).
    pub fn new(
        pre: Option<&str>,
        merges: &[String],
        token_to_id: &HashMap<String, u32>,
        n_vocab: u32,
    ) -> Result<Self> {
        let cfg = pre_config(pre).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "tokenizer.ggml.pre = {:?} (pre-tokenizer not implemented)",
                pre.unwrap_or("")
            ))
        })?;
        let splitter = Splitter::new(cfg.patterns).map_err(|e| {
            EngineError::invalid_model(format!("pre-tokenizer {:?}: {e}", pre.unwrap_or("")))
        })?;
        if merges.is_empty() {
            return Err(EngineError::invalid_model(
                "tokenizer.ggml.merges is missing or empty",
            ));
        }

        let mut table: HashMap<u64, Merge, BuildHasherDefault<PairHasher>> =
            HashMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut extra: HashMap<String, u32> = HashMap::new();
        let mut merged = String::new();
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first character.
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, ch)| ch == ' ')
                .map(|(i, _)| i);
            let Some(pos) = split else {
                return Err(EngineError::invalid_model(format!(
                    "tokenizer.ggml.merges[{rank}] = {m:?} has no \"left right\" separator"
                )));
            };
            let (left, right) = (&m[..pos], &m[pos + 1..]);
            let lookup = |s: &str| {
                token_to_id.get(s).copied().ok_or_else(|| {
                    EngineError::invalid_model(format!(
                        "tokenizer.ggml.merges[{rank}] = {m:?}: {s:?} is not in tokenizer.ggml.tokens"
                    ))
                })
            };
            let (l, r) = (lookup(left)?, lookup(right)?);
            merged.clear();
            merged.push_str(left);
            merged.push_str(right);
            let result = match token_to_id.get(&merged).or_else(|| extra.get(&merged)) {
                Some(&id) => id,
                None => {
                    let id = n_vocab.saturating_add(extra.len() as u32);
                    extra.insert(merged.clone(), id);
                    id
                }
            };
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            // The first occurrence of a pair wins, as with llama.cpp's map emplace.
            table
                .entry(pair_key(l, r))
                .or_insert(Merge { rank, result });
        }

        let mut byte_token = [NONE; 256];
        let mut buf = [0u8; 4];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            let s = byte_to_char(b as u8).encode_utf8(&mut buf);
            if let Some(&id) = token_to_id.get(&*s) {
                *slot = id;
            }
        }

        Ok(Self {
            splitter,
            ignore_merges: cfg.ignore_merges,
            merges: table,
            byte_token,
            n_vocab,
        })
    }

    /// Tokenizes `text` (a fragment without special tokens) and appends the ids to `out`.
    pub fn encode(&self, text: &str, token_to_id: &HashMap<String, u32>, out: &mut Vec<u32>) {
        let mut symbols = Vec::new();
        let mut heap = BinaryHeap::new();
        let mut mapped = String::new();
        for (a, b) in self.splitter.split(text) {
            let word = &text.as_bytes()[a..b];
            if self.ignore_merges {
                mapped.clear();
                mapped.extend(word.iter().map(|&x| byte_to_char(x)));
                if let Some(&id) = token_to_id.get(&mapped) {
                    out.push(id);
                    continue;
                }
            }
            self.encode_word(word, &mut symbols, &mut heap, out);
        }
    }

    fn encode_word(
        &self,
        word: &[u8],
        symbols: &mut Vec<Symbol>,
        heap: &mut BinaryHeap<Bigram>,
        out: &mut Vec<u32>,
    ) {
        let n = word.len() as u32;
        symbols.clear();
        symbols.extend(word.iter().enumerate().map(|(i, &b)| {
            let i = i as u32;
            Symbol {
                id: self.byte_token[b as usize],
                start: i,
                len: 1,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            }
        }));
        heap.clear();
        for i in 1..n {
            self.push_bigram(symbols, i - 1, i, heap);
        }
        while let Some(Reverse((_, left, right, lid, rid, result))) = heap.pop() {
            let (l, r) = (symbols[left as usize], symbols[right as usize]);
            // Skip candidates made stale by an earlier merge.
            if l.len == 0 || r.len == 0 || l.id != lid || r.id != rid {
                continue;
            }
            let merged = &mut symbols[left as usize];
            merged.id = result;
            merged.len += r.len;
            merged.next = r.next;
            symbols[right as usize].len = 0;
            if r.next != NONE {
                symbols[r.next as usize].prev = left;
            }
            self.push_bigram(symbols, l.prev, left, heap);
            self.push_bigram(symbols, left, r.next, heap);
        }
        for s in symbols.iter().filter(|s| s.len > 0) {
            if s.id < self.n_vocab {
                out.push(s.id);
            } else {
                // Not a token: llama.cpp looks each byte of the *encoded* text up as a token, which
                // can only succeed for the printable ASCII bytes (they encode as themselves).
                let bytes = &word[s.start as usize..(s.start + s.len) as usize];
                for &b in bytes {
                    let id = self.byte_token[b as usize];
                    if (0x21..=0x7E).contains(&b) && id != NONE {
                        out.push(id);
                    }
                }
            }
        }
    }

    fn push_bigram(
        &self,
        symbols: &[Symbol],
        left: u32,
        right: u32,
        heap: &mut BinaryHeap<Bigram>,
    ) {
        if left == NONE || right == NONE {
            return;
        }
        let (lid, rid) = (symbols[left as usize].id, symbols[right as usize].id);
        if lid == NONE || rid == NONE {
            return;
        }
        if let Some(m) = self.merges.get(&pair_key(lid, rid)) {
            heap.push(Reverse((m.rank, left, right, lid, rid, m.result)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_pre_tokenizer_compiles() {
        let names = [
            "",
            "default",
            "llama-bpe",
            "dbrx",
            "jais-2",
            "deepseek-coder",
            "deepseek-v3",
            "spark2_5",
            "falcon",
            "smollm",
            "gpt-2",
            "qwen2",
            "qwen35",
            "poro-chat",
            "viking",
            "tekken",
            "chameleon",
            "gpt-4o",
            "granite-embed-multi-97m",
            "tiny_aya",
            "bailingmoe",
            "seed-coder",
            "ufakzeka",
            "laguna",
            "exaone-moe",
            "minicpm5",
        ];
        for name in names {
            let cfg = pre_config(Some(name)).unwrap();
            Splitter::new(cfg.patterns).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(pre_config(Some("kimi-k2")).is_none());
    }

    /// Splits computed with Python's `regex` module on the original (HF) patterns. llama.cpp
    /// agrees with them on these texts; differences would show a broken pattern translation.
    #[test]
    fn splits_match_reference_regex_engine() {
        let texts = [
            "Hello world's  end 123456!!\n\n x",
            "I'M 12345 ok?\r\n  done",
            "  two  spaces  between   ",
            "Tabs\tand\nnewlines\n\n\nmany",
            "CamelCaseIdentifierWithNumbers123 HTTPServer getX",
            "Ünïcödé àccents: café, naïve, Straße",
            "x = [1, 2, 3]; y = {'a': 1}\n",
            "日本語のテキスト 😀🚀 and ❤️",
            "\u{a0}non-breaking\u{a0}space\u{3000}x",
            "def f(x):\n    return x**2  # square\n",
        ];
        let want_qwen2: [&[&str]; 10] = [
            &[
                "Hello", " world", "'s", " ", " end", " ", "1", "2", "3", "4", "5", "6", "!!\n\n",
                " x",
            ],
            &[
                "I", "'M", " ", "1", "2", "3", "4", "5", " ok", "?\r\n", " ", " done",
            ],
            &[" ", " two", " ", " spaces", " ", " between", "   "],
            &["Tabs", "\tand", "\n", "newlines", "\n\n\n", "many"],
            &[
                "CamelCaseIdentifierWithNumbers",
                "1",
                "2",
                "3",
                " HTTPServer",
                " getX",
            ],
            &[
                "Ünïcödé",
                " àccents",
                ":",
                " café",
                ",",
                " naïve",
                ",",
                " Straße",
            ],
            &[
                "x", " =", " [", "1", ",", " ", "2", ",", " ", "3", "];", " y", " =", " {'", "a",
                "':", " ", "1", "}\n",
            ],
            &["日本語のテキスト", " 😀🚀", " and", " ❤️"],
            &["\u{a0}non", "-breaking", "\u{a0}space", "\u{3000}x"],
            &[
                "def", " f", "(x", "):\n", "   ", " return", " x", "**", "2", " ", " #", " square",
                "\n",
            ],
        ];
        let want_llama3: [&[&str]; 10] = [
            &[
                "Hello", " world", "'s", " ", " end", " ", "123", "456", "!!\n\n", " x",
            ],
            &["I", "'M", " ", "123", "45", " ok", "?\r\n", " ", " done"],
            &[" ", " two", " ", " spaces", " ", " between", "   "],
            &["Tabs", "\tand", "\n", "newlines", "\n\n\n", "many"],
            &[
                "CamelCaseIdentifierWithNumbers",
                "123",
                " HTTPServer",
                " getX",
            ],
            &[
                "Ünïcödé",
                " àccents",
                ":",
                " café",
                ",",
                " naïve",
                ",",
                " Straße",
            ],
            &[
                "x", " =", " [", "1", ",", " ", "2", ",", " ", "3", "];", " y", " =", " {'", "a",
                "':", " ", "1", "}\n",
            ],
            &["日本語のテキスト", " 😀🚀", " and", " ❤️"],
            &["\u{a0}non", "-breaking", "\u{a0}space", "\u{3000}x"],
            &[
                "def", " f", "(x", "):\n", "   ", " return", " x", "**", "2", " ", " #", " square",
                "\n",
            ],
        ];
        let want_gpt4o: [&[&str]; 10] = [
            &[
                "Hello", " world's", " ", " end", " ", "123", "456", "!!\n\n", " x",
            ],
            &["I'M", " ", "123", "45", " ok", "?\r\n", " ", " done"],
            &[" ", " two", " ", " spaces", " ", " between", "   "],
            &["Tabs", "\tand", "\n", "newlines", "\n\n\n", "many"],
            &[
                "Camel",
                "Case",
                "Identifier",
                "With",
                "Numbers",
                "123",
                " HTTPServer",
                " get",
                "X",
            ],
            &[
                "Ünïcödé",
                " àccents",
                ":",
                " café",
                ",",
                " naïve",
                ",",
                " Straße",
            ],
            &[
                "x", " =", " [", "1", ",", " ", "2", ",", " ", "3", "];", " y", " =", " {'", "a",
                "':", " ", "1", "}\n",
            ],
            &["日本語のテキスト", " 😀🚀", " and", " ❤️"],
            &["\u{a0}non", "-breaking", "\u{a0}space", "\u{3000}x"],
            &[
                "def", " f", "(x", "):\n", "   ", " return", " x", "**", "2", " ", " #", " square",
                "\n",
            ],
        ];
        for (pattern, want) in [
            (QWEN2, want_qwen2),
            (LLAMA3_PATTERN, want_llama3),
            (GPT4O, want_gpt4o),
        ] {
            let splitter = Splitter::new(&[pattern]).unwrap();
            for (text, want) in texts.iter().zip(want) {
                let got: Vec<&str> = splitter
                    .split(text)
                    .into_iter()
                    .map(|(a, b)| &text[a..b])
                    .collect();
                assert_eq!(got, want, "{pattern} on {text:?}");
            }
        }
    }

    fn toy() -> (HashMap<String, u32>, Vec<String>) {
        let toks = ["a", "b", "c", "Ġ", "ab", "abc", "Ġa", "bc"];
        let map = toks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = ["a b", "ab c", "Ġ a", "b c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        (map, merges)
    }

    #[test]
    fn merges_by_rank() {
        let (map, merges) = toy();
        let bpe = Bpe::new(Some("gpt-2"), &merges, &map, map.len() as u32).unwrap();
        let mut out = Vec::new();
        bpe.encode("abc abcb", &map, &mut out);
        // "abc": a+b (rank 0), ab+c (rank 1). " abcb": a+b and ab+c again come before "Ġ a"
        // (rank 2), which is then stale; "b c" (rank 3) too.
        assert_eq!(out, [5, 3, 5, 1]);
    }

    #[test]
    fn rejects_unknown_merge_parts() {
        let (map, _) = toy();
        let err = Bpe::new(None, &["a zz".to_string()], &map, map.len() as u32).unwrap_err();
        assert!(
            err.to_string().contains("tokenizer.ggml.merges[0]"),
            "{err}"
        );
    }
}
