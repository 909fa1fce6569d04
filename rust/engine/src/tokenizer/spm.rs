//! SentencePiece (`tokenizer.ggml.model = "llama"`) tokenizer, producing exactly the ids of
//! llama.cpp's `llm_tokenizer_spm` (src/llama-vocab.cpp) for one text fragment.
//!
//! Encoding a fragment (special tokens have already been cut out by the caller):
//!
//! 1. optionally prepend a space (the model's `add_space_prefix`, for a fragment at the start of
//!    the input or right after a special token — the caller decides, see
//!    [`SpmTokenizer::encode_fragment`]), then replace every ASCII space by U+2581 `▁`;
//! 2. split into UTF-8 characters and repeatedly merge the adjacent pair whose concatenation is
//!    the vocabulary token with the highest score (ties: the leftmost pair), with a priority queue
//!    and a doubly linked symbol list: O(n log n) per fragment;
//! 3. emit each final symbol's id; a symbol that is not a token (only single characters can be
//!    such) is emitted as its UTF-8 bytes through the byte tokens `<0xNN>` (llama.cpp's
//!    `byte_to_token`, which falls back to a token whose text is the single ASCII byte). Where
//!    llama.cpp would abort (a byte with no token at all) the character becomes one `unk` token
//!    instead, or nothing if the model has no `unk`.
//!
//! llama.cpp's `rev_merge` resegmentation never fires on valid UTF-8 input (every merged symbol
//! is a vocabulary token by construction, and a single character can never equal the text of a
//! two-symbol bigram), so it is not reproduced.
//!
//! Decoding (llama.cpp's `token_to_piece` for SPM), precomputed per token in
//! [`SpmTokenizer::token_bytes`]: normal tokens with `▁` unescaped to a space, byte tokens
//! `<0xNN>` as that byte, user-defined tokens as their raw text, control / unknown / unused
//! tokens as nothing (a caller rendering specials uses the token text instead).
//!
//! This file depends on `std` only.

use std::collections::BinaryHeap;

/// The character SentencePiece uses for a space, U+2581 LOWER ONE EIGHTH BLOCK.
pub const SPACE_ESCAPE: char = '\u{2581}';

/// `tokenizer.ggml.token_type` values.
const TYPE_NORMAL: i32 = 1;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// "No symbol" in the linked symbol list.
const NONE: u32 = u32::MAX;

/// Fragments are merged in chunks of at most this many bytes, so symbol indices fit in `u32`
/// (llama.cpp's own limit is `i32` text lengths; no real input comes near either).
const MAX_CHUNK: usize = 1 << 31;

/// SentencePiece BPE tokenizer over a scored vocabulary. Immutable after construction, so
/// `Send + Sync`.
#[derive(Debug)]
pub struct SpmTokenizer {
    /// Every token text, concatenated; token `i` is `text[text_offsets[i]..text_offsets[i + 1]]`.
    text: String,
    text_offsets: Vec<u32>,
    /// Open-addressing hash table over the token texts: 0 = empty slot, else `id + 1`.
    table: Vec<u32>,
    /// Scores by id as order-preserving integers ([`score_key`]).
    score_keys: Vec<u32>,
    /// Longest token text in bytes: longer candidate pairs are not looked up.
    max_token_len: usize,
    /// The token each byte falls back to: `<0xNN>`, else the one-byte text, else none.
    byte_tokens: Box<[Option<u32>; 256]>,
    unk: Option<u32>,
    add_space_prefix: bool,
    /// `pieces[piece_offsets[i]..piece_offsets[i + 1]]`: the bytes token `i` decodes to.
    pieces: Vec<u8>,
    piece_offsets: Vec<usize>,
}

/// A candidate merge of a symbol with its right neighbour (llama.cpp's `llm_bigram_spm`), 16
/// bytes so the queue stays cache-friendly: `key` orders the max-heap, higher score first, then
/// the leftmost pair (`score_key << 32 | !left`). The right symbol is not stored: while the left
/// symbol keeps its length its `next` cannot change, so `next` at pop time is the right symbol
/// the candidate was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    key: u64,
    /// Byte length of the merged text when the candidate was made; a mismatch later means one of
    /// the two symbols has changed and the candidate is stale.
    size: u32,
}

impl Bigram {
    fn left(&self) -> u32 {
        !(self.key as u32)
    }
}

/// A run of the escaped text in the merge list (llama.cpp's `llm_symbol`). `len == 0` marks a
/// symbol merged into its left neighbour.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: usize,
    len: u32,
    prev: u32,
    next: u32,
}

/// Maps a score to a `u32` whose unsigned order is the score's order (NaN counts as -inf, -0.0
/// as 0.0; llama.cpp's `float <` comparisons are undefined on NaN anyway).
fn score_key(score: f32) -> u32 {
    let s = if score.is_nan() {
        f32::NEG_INFINITY
    } else {
        score + 0.0
    };
    let bits = s.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

impl SpmTokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.tokens` / `scores` / `token_type` (`scores` and
    /// `token_types` may be empty: all scores 0, all tokens normal), the unknown-token id and
    /// `tokenizer.ggml.add_space_prefix`. Empty token texts are renamed `[EMPTY_<id>]` as llama.cpp
    /// does. Errors on mismatched lengths, an out-of-range `unk`, duplicate token texts (which
    /// llama.cpp rejects) or a vocabulary too large for 32-bit ids.
    pub fn new(
        tokens: &[String],
        scores: &[f32],
        token_types: &[i32],
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Result<Self, String> {
        let n = tokens.len();
        if n == 0 {
            return Err("empty vocabulary".into());
        }
        if u32::try_from(n)
            .ok()
            .and_then(|n| n.checked_add(1))
            .is_none()
        {
            return Err(format!("vocabulary of {n} tokens is too large"));
        }
        if !scores.is_empty() && scores.len() != n {
            return Err(format!("{} scores for {n} tokens", scores.len()));
        }
        if !token_types.is_empty() && token_types.len() != n {
            return Err(format!("{} token types for {n} tokens", token_types.len()));
        }
        if let Some(u) = unk {
            if u as usize >= n {
                return Err(format!("unknown token id {u} out of range ({n} tokens)"));
            }
        }

        // Token texts, flattened.
        let mut text = String::with_capacity(tokens.iter().map(String::len).sum());
        let mut text_offsets = Vec::with_capacity(n + 1);
        text_offsets.push(0u32);
        let mut max_token_len = 0;
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                text.push_str(&format!("[EMPTY_{i}]"));
            } else {
                text.push_str(t);
            }
            let end = u32::try_from(text.len())
                .map_err(|_| "token texts exceed 4 GiB in total".to_string())?;
            max_token_len =
                max_token_len.max(end as usize - *text_offsets.last().unwrap_or(&0) as usize);
            text_offsets.push(end);
        }

        let mut tok = Self {
            text,
            text_offsets,
            table: Vec::new(),
            score_keys: if scores.is_empty() {
                vec![score_key(0.0); n]
            } else {
                scores.iter().map(|&s| score_key(s)).collect()
            },
            max_token_len,
            byte_tokens: Box::new([None; 256]),
            unk,
            add_space_prefix,
            pieces: Vec::new(),
            piece_offsets: Vec::new(),
        };

        // Hash table at load factor <= 1/2.
        let cap = (2 * n).next_power_of_two();
        tok.table = vec![0u32; cap];
        for id in 0..n as u32 {
            let t = tok.text_of(id);
            let mask = cap - 1;
            let mut slot = hash(t.as_bytes()) as usize & mask;
            loop {
                match tok.table[slot] {
                    0 => {
                        tok.table[slot] = id + 1;
                        break;
                    }
                    e if tok.text_of(e - 1) == t => {
                        return Err(format!("duplicate token {t:?} at ids {} and {id}", e - 1));
                    }
                    _ => slot = (slot + 1) & mask,
                }
            }
        }

        // Byte fallback (llama.cpp's `byte_to_token`): "<0xNN>" with upper-case hex, else the
        // one-character token for an ASCII byte.
        for b in 0..=255u8 {
            let id = tok.token_id(&format!("<0x{b:02X}>")).or_else(|| {
                if b.is_ascii() {
                    tok.token_id(char::from(b).encode_utf8(&mut [0u8; 4]))
                } else {
                    None
                }
            });
            tok.byte_tokens[b as usize] = id;
        }

        // Decoded pieces.
        let mut pieces = Vec::with_capacity(tok.text.len());
        let mut piece_offsets = Vec::with_capacity(n + 1);
        piece_offsets.push(0);
        for id in 0..n as u32 {
            let t = tok.text_of(id);
            match token_types.get(id as usize).copied().unwrap_or(TYPE_NORMAL) {
                TYPE_NORMAL => unescape_whitespace(t, &mut pieces),
                TYPE_USER_DEFINED => pieces.extend_from_slice(t.as_bytes()),
                TYPE_BYTE => pieces.extend(parse_byte_token(t)),
                // Unknown, control, unused, undefined: rendered only as special text.
                _ => {}
            }
            piece_offsets.push(pieces.len());
        }
        tok.pieces = pieces;
        tok.piece_offsets = piece_offsets;
        Ok(tok)
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.score_keys.len()
    }

    /// Whether the model prepends a space to the first fragment (`add_space_prefix`).
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    /// The id whose text is exactly `text` (any token type).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        if text.len() > self.max_token_len {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut slot = hash(text.as_bytes()) as usize & mask;
        loop {
            match self.table[slot] {
                0 => return None,
                e if self.text_of(e - 1) == text => return Some(e - 1),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// The vocabulary text of a token (`[EMPTY_<id>]` for an empty one); empty for an
    /// out-of-range id.
    pub fn token_text(&self, id: u32) -> &str {
        if (id as usize) < self.n_vocab() {
            self.text_of(id)
        } else {
            ""
        }
    }

    fn text_of(&self, id: u32) -> &str {
        let i = id as usize;
        &self.text[self.text_offsets[i] as usize..self.text_offsets[i + 1] as usize]
    }

    /// Encodes one fragment of plain text (no special-token parsing) and appends the ids to
    /// `out`. `with_prefix`: prepend a space if the model has `add_space_prefix` — llama.cpp does
    /// this for the first fragment of the input and for every fragment that directly follows a
    /// special (control / user-defined / unknown) token. An empty fragment yields nothing
    /// (llama.cpp never produces empty fragments).
    pub fn encode_fragment(&self, text: &str, with_prefix: bool, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut escaped = String::with_capacity(text.len() + 3 * (text.len() / 4 + 1));
        if with_prefix && self.add_space_prefix {
            escaped.push(SPACE_ESCAPE);
        }
        for ch in text.chars() {
            escaped.push(if ch == ' ' { SPACE_ESCAPE } else { ch });
        }
        self.encode_escaped(&escaped, out);
    }

    /// The merge loop over already-escaped text.
    fn encode_escaped(&self, text: &str, out: &mut Vec<u32>) {
        let mut rest = text;
        while rest.len() > MAX_CHUNK {
            let mut cut = MAX_CHUNK;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            self.encode_chunk(&rest[..cut], out);
            rest = &rest[cut..];
        }
        self.encode_chunk(rest, out);
    }

    /// [`encode_escaped`](Self::encode_escaped) for at most [`MAX_CHUNK`] bytes.
    fn encode_chunk(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, ch) in text.char_indices() {
            let i = symbols.len() as u32;
            let len = ch.len_utf8();
            symbols.push(Symbol {
                start,
                len: len as u32,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if start + len == text.len() {
                    NONE
                } else {
                    i + 1
                },
            });
        }
        if symbols.is_empty() {
            return;
        }

        let mut seed = Vec::with_capacity(symbols.len());
        for i in 1..symbols.len() as u32 {
            seed.extend(self.bigram(text, &symbols, i - 1));
        }
        let mut queue = BinaryHeap::from(seed);

        while let Some(bigram) = queue.pop() {
            let left = bigram.left();
            let l = symbols[left as usize];
            if l.len == 0 || l.next == NONE {
                continue;
            }
            let r = symbols[l.next as usize];
            // Skip stale candidates: one side was merged away or has grown since.
            if r.len == 0 || l.len + r.len != bigram.size {
                continue;
            }
            // Merge the right symbol into the left one.
            symbols[l.next as usize].len = 0;
            symbols[left as usize].len += r.len;
            symbols[left as usize].next = r.next;
            if r.next != NONE {
                symbols[r.next as usize].prev = left;
            }
            if l.prev != NONE {
                queue.extend(self.bigram(text, &symbols, l.prev));
            }
            queue.extend(self.bigram(text, &symbols, left));
        }

        // Symbol 0 is never merged away, so it heads the list.
        let mut i = 0;
        while i != NONE {
            let s = symbols[i as usize];
            let piece = &text[s.start..s.start + s.len as usize];
            match self.token_id(piece) {
                Some(id) => out.push(id),
                None => self.push_bytes(piece, out),
            }
            i = s.next;
        }
    }

    /// The merge candidate of symbol `left` with its right neighbour, if their concatenation is
    /// a token.
    fn bigram(&self, text: &str, symbols: &[Symbol], left: u32) -> Option<Bigram> {
        let l = symbols[left as usize];
        let r = symbols.get(l.next as usize)?;
        let size = (l.len + r.len) as usize;
        if size > self.max_token_len {
            return None;
        }
        // Adjacent symbols are contiguous in the text.
        let id = self.token_id(&text[l.start..l.start + size])?;
        let key = u64::from(self.score_keys[id as usize]) << 32 | u64::from(!left);
        Some(Bigram {
            key,
            size: size as u32,
        })
    }

    /// Byte fallback for a piece that is not a token: one byte token per UTF-8 byte; if some
    /// byte has no token, the whole piece becomes one `unk` (or nothing without `unk`).
    fn push_bytes(&self, piece: &str, out: &mut Vec<u32>) {
        if piece
            .bytes()
            .all(|b| self.byte_tokens[b as usize].is_some())
        {
            out.extend(piece.bytes().filter_map(|b| self.byte_tokens[b as usize]));
        } else {
            out.extend(self.unk);
        }
    }

    /// The bytes token `id` decodes to (llama.cpp's `token_to_piece(id, special = false)` for
    /// SPM): normal tokens with `▁` turned into a space, `<0xNN>` byte tokens as that byte,
    /// user-defined tokens as their text, control / unknown / unused tokens (and out-of-range
    /// ids) as nothing. No leading-space stripping here: see [`decode_into`](Self::decode_into).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.piece_offsets.get(i), self.piece_offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.pieces[a..b],
            _ => &[],
        }
    }

    /// Appends the decoded bytes of `ids` to `out` the way llama.cpp's `detokenize` does for a
    /// sequence that does not start with BOS: with `add_space_prefix`, one leading space of the
    /// first token's piece is dropped (even if that piece is empty, the stripping is used up).
    /// A caller whose sequence starts with BOS must skip the stripping (llama.cpp keeps the space
    /// after a leading BOS) — pass `ids` without the BOS and decode with [`token_bytes`]
    /// (Self::token_bytes) directly instead.
    pub fn decode_into(&self, ids: &[u32], out: &mut Vec<u8>) {
        let mut strip = self.add_space_prefix;
        for &id in ids {
            let mut piece = self.token_bytes(id);
            if strip {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
                strip = false;
            }
            out.extend_from_slice(piece);
        }
    }
}

/// A normal SentencePiece token's text as bytes: every `▁` becomes a space (llama.cpp's
/// `llama_unescape_whitespace`).
pub fn unescape_whitespace(text: &str, out: &mut Vec<u8>) {
    let mut rest = text;
    while let Some(p) = rest.find(SPACE_ESCAPE) {
        out.extend_from_slice(&rest.as_bytes()[..p]);
        out.push(b' ');
        rest = &rest[p + SPACE_ESCAPE.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
}

/// The byte of a byte token's text `<0xNN>` (two hex digits, either case); `None` for any other
/// text (`<0x-1>`, `<0xZZ>`, `<0x1>`, ...).
pub fn parse_byte_token(text: &str) -> Option<u8> {
    let b = text.as_bytes();
    if b.len() != 6 || &b[..3] != b"<0x" || b[5] != b'>' {
        return None;
    }
    let hex = |c: u8| char::from(c).to_digit(16);
    Some((hex(b[3])? * 16 + hex(b[4])?) as u8)
}

/// A fast 64-bit hash of a short byte string (multiply-rotate over 8-byte words). Keys are the
/// model's token texts; lookups of arbitrary input stop at the first empty slot.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut w = [0u8; 8];
        w[..rem.len()].copy_from_slice(rem);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    // Final avalanche (splitmix64), so the low bits used for the slot depend on every byte.
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: control tokens, byte tokens for a few bytes, scored pieces.
    fn toy(add_space_prefix: bool) -> SpmTokenizer {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in [b'\n', 0xC3, 0xA9, 0xE2] {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (t, s) in [
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("c", -3.0),
            ("ab", -1.5),
            ("bc", -1.0),
            ("▁a", -0.5),
            ("abc", -0.1),
            ("▁abc", -5.0),
            ("aa", -1.0),
            ("<0xZZ>", -9.0),
            ("<0x-1>", -9.0),
        ] {
            tokens.push(t.into());
            types.push(if t.starts_with("<0x") { 6 } else { 1 });
            scores.push(s);
        }
        SpmTokenizer::new(&tokens, &scores, &types, Some(0), add_space_prefix).unwrap()
    }

    fn enc(t: &SpmTokenizer, s: &str, prefix: bool) -> Vec<String> {
        let mut ids = Vec::new();
        t.encode_fragment(s, prefix, &mut ids);
        ids.iter().map(|&i| t.token_text(i).to_string()).collect()
    }

    #[test]
    fn merges_by_score() {
        let t = toy(false);
        // "bc" (-1.0) beats "ab" (-1.5), then "a"+"bc" = "abc" is a token.
        assert_eq!(enc(&t, "abc", false), ["abc"]);
        // "ab" is the only pair; "c"+"ab" is not a token.
        assert_eq!(enc(&t, "cab", false), ["c", "ab"]);
        // "▁a" (-0.5) merges first, "▁a"+"b" is not a token, then "bc", then "▁a"+"bc".
        assert_eq!(enc(&t, " abc", false), ["▁abc"]);
        // Ties go to the leftmost pair: "aa" "aa".
        assert_eq!(enc(&t, "aaaa", false), ["aa", "aa"]);
        assert_eq!(enc(&t, "aaa", false), ["aa", "a"]);
    }

    #[test]
    fn space_prefix() {
        let t = toy(true);
        assert_eq!(enc(&t, "a", true), ["▁a"]);
        assert_eq!(enc(&t, "a", false), ["a"]);
        assert_eq!(enc(&t, " a", false), ["▁a"]);
        assert_eq!(enc(&t, "", true), Vec::<String>::new());
        let t = toy(false);
        assert_eq!(enc(&t, "a", true), ["a"]);
    }

    #[test]
    fn byte_fallback_and_unk() {
        let t = toy(false);
        // 'é' = C3 A9: both bytes have tokens.
        assert_eq!(enc(&t, "é", false), ["<0xC3>", "<0xA9>"]);
        assert_eq!(enc(&t, "\n", false), ["<0x0A>"]);
        // 'ü' = C3 BC: BC has no byte token -> one unk.
        assert_eq!(enc(&t, "aü", false), ["a", "<unk>"]);
        // Malformed byte-token texts are not byte tokens and decode to nothing.
        assert_eq!(t.token_bytes(t.token_id("<0xZZ>").unwrap()), b"");
        assert_eq!(t.token_bytes(t.token_id("<0x-1>").unwrap()), b"");
        assert_eq!(t.token_bytes(t.token_id("<0xC3>").unwrap()), [0xC3]);
    }

    #[test]
    fn decode() {
        let t = toy(true);
        let mut ids = Vec::new();
        t.encode_fragment("ab a", true, &mut ids);
        let mut out = Vec::new();
        t.decode_into(&ids, &mut out);
        assert_eq!(out, b"ab a");
        assert_eq!(t.token_bytes(1), b""); // control
        assert_eq!(t.token_bytes(u32::MAX), b"");
    }

    #[test]
    fn rejects_bad_vocab() {
        let toks: Vec<String> = vec!["a".into(), "a".into()];
        assert!(SpmTokenizer::new(&toks, &[], &[], None, false).is_err());
        assert!(SpmTokenizer::new(&toks[..1], &[0.0, 1.0], &[], None, false).is_err());
        assert!(SpmTokenizer::new(&toks[..1], &[], &[], Some(1), false).is_err());
        assert!(SpmTokenizer::new(&[], &[], &[], None, false).is_err());
        // Empty texts are renamed, so two empty tokens are not duplicates.
        let toks: Vec<String> = vec![String::new(), String::new(), "x".into()];
        let t = SpmTokenizer::new(&toks, &[], &[], None, false).unwrap();
        assert_eq!(t.token_text(1), "[EMPTY_1]");
    }

    #[test]
    fn random_round_trips() {
        // Deterministic xorshift; characters all encodable, plus ones that fall back to unk.
        let t = toy(true);
        let good = [' ', 'a', 'b', 'c', 'é', '\n', '▁'];
        let bad = ['ü', '日', '\u{10FFFF}'];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| good[(next() % good.len() as u64) as usize])
                .collect();
            let mut ids = Vec::new();
            t.encode_fragment(&s, true, &mut ids);
            let mut back = Vec::new();
            t.decode_into(&ids, &mut back);
            // '▁' in the input decodes as a space, as in llama.cpp.
            assert_eq!(back, s.replace('▁', " ").as_bytes(), "round {round}: {s:?}");
            let mut noisy = s.clone();
            noisy.push(bad[(next() % bad.len() as u64) as usize]);
            ids.clear();
            t.encode_fragment(&noisy, false, &mut ids);
            assert_eq!(ids.last(), Some(&0));
        }
    }

    #[test]
    fn long_input_is_fast() {
        let t = toy(false);
        let s = "a".repeat(100_000);
        let mut ids = Vec::new();
        t.encode_fragment(&s, false, &mut ids);
        assert_eq!(ids.len(), 50_000);
    }
}
